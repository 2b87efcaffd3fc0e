//! Compute Engine prices from the public Cloud Billing Catalog (cloud-apis §8), and
//! [`CatalogPrices`], the [`PriceSource`] of GKE Standard clusters.
//!
//! [`BillingCatalog`] pages through `v1/services/6F81-5844-456A/skus` until the
//! `nextPageToken` is absent or empty, and keeps the Compute SKUs as a [`PriceBook`] per
//! currency for a TTL (a day by default: the catalog changes rarely). Concurrent callers
//! share one fetch.
//!
//! A price is `units` (an int64, hence a JSON **string**) plus `nanos`, held as an integer
//! count of nano-units ([`Money`]) and turned into f64 only for a [`Quote`]. A SKU's tier
//! is the one with the largest `startUsageAmount` at or below the usage (normally there is
//! only tier 0).
//!
//! Matching ([`PriceBook::rates`]), as OpenCost does it: the description is
//! `<FAMILY> Instance Core running in <Region>` or `… Instance Ram …` (`Spot Preemptible
//! <FAMILY> …` for spot, with `usageType` `Preemptible` instead of `OnDemand`; N1 says
//! `N1 Predefined Instance Core`, N2D and C2D say `N2D AMD …`), `serviceRegions` contains
//! the region, and descriptions with `Custom`, `Sole Tenancy`, `Commitment` or `Extended`
//! are left out. Where the region's display name is known ([`region_display_name`]) it
//! must match too. A core price must be per hour (`h`) and a RAM price per GiB-hour
//! (`GiBy.h`); anything else is an error, never a silent conversion.
//!
//! [`CatalogPrices`] answers a cluster's [`Quote`] from its region and node pools: one
//! family, or several weighted by their pools' node counts. When the catalog cannot be
//! reached it uses the last price book it had (saying how old), and without one, or when
//! a family has no price, the Cluster file's static rates, with `fallback_reason` set.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use ferry_ports::{PortError, PriceSource, Quote};
use serde::Deserialize;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::gke::GkeCluster;
use crate::http::{Reply, client, connection_error, form_encode, trim_base};
use crate::secret::Secret;
use crate::token::TokenSource;

/// Google's Cloud Billing endpoint.
pub const DEFAULT_CATALOG_URL: &str = "https://cloudbilling.googleapis.com/";
/// The Compute Engine service: node vCPU and RAM of GKE Standard.
pub const COMPUTE_ENGINE_SERVICE: &str = "6F81-5844-456A";
/// How long a price book is used before it is fetched again.
pub const DEFAULT_CATALOG_TTL: Duration = Duration::from_secs(24 * 3600);
/// The catalog's own default and maximum page size.
pub const DEFAULT_PAGE_SIZE: u32 = 5000;
/// A catalog that keeps sending page tokens past this is broken, not large (Compute
/// Engine has a few tens of thousands of SKUs).
const MAX_PAGES: usize = 1000;
const SERVICE: &str = "cloudbilling";
const NANOS_PER_UNIT: i64 = 1_000_000_000;

// ---- wire shapes (cloudbilling.v1.json) ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ListSkusWire {
    skus: Vec<SkuWire>,
    next_page_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SkuWire {
    sku_id: String,
    description: String,
    category: CategoryWire,
    service_regions: Vec<String>,
    pricing_info: Vec<PricingInfoWire>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct CategoryWire {
    resource_family: String,
    resource_group: String,
    usage_type: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct PricingInfoWire {
    effective_time: String,
    pricing_expression: Option<PricingExpressionWire>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct PricingExpressionWire {
    usage_unit: String,
    tiered_rates: Vec<TierRateWire>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct TierRateWire {
    start_usage_amount: f64,
    unit_price: MoneyWire,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct MoneyWire {
    currency_code: String,
    units: Option<String>,
    nanos: Option<i32>,
}

// ---- typed values ----

/// An amount as an integer count of nano-units of `currency`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Money {
    pub currency: String,
    pub nanos: i64,
}

impl Money {
    /// `units` (an int64 as a decimal string, absent meaning 0) plus `nanos`; both must
    /// have the same sign, as google.type.Money requires.
    pub fn from_parts(
        currency: &str,
        units: Option<&str>,
        nanos: Option<i32>,
    ) -> std::result::Result<Money, String> {
        let units: i64 = match units {
            None => 0,
            Some(text) => text
                .parse()
                .map_err(|_| format!("units {text:?} is not an int64"))?,
        };
        let nanos = i64::from(nanos.unwrap_or(0));
        if nanos.abs() >= NANOS_PER_UNIT || (units > 0 && nanos < 0) || (units < 0 && nanos > 0) {
            return Err(format!("nanos {nanos} does not go with units {units}"));
        }
        let total = units
            .checked_mul(NANOS_PER_UNIT)
            .and_then(|u| u.checked_add(nanos))
            .ok_or_else(|| format!("units {units} is too large"))?;
        Ok(Money {
            currency: currency.to_owned(),
            nanos: total,
        })
    }

    /// As a decimal number (exact to about 15 digits), for a [`Quote`].
    pub fn as_f64(&self) -> f64 {
        // Exact: both parts are below 2^53 for any price this catalog has.
        (self.nanos / NANOS_PER_UNIT) as f64 + (self.nanos % NANOS_PER_UNIT) as f64 / 1e9
    }
}

/// One price tier: from `start_usage` usage units on, `unit_price` per usage unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Tier {
    pub start_usage: f64,
    pub unit_price: Money,
}

/// A Compute SKU with its current pricing.
#[derive(Clone, Debug, PartialEq)]
pub struct SkuPrice {
    pub sku_id: String,
    pub description: String,
    pub resource_group: String,
    /// `OnDemand`, `Preemptible`, `Commit1Yr`, …
    pub usage_type: String,
    pub service_regions: Vec<String>,
    /// `h`, `GiBy.h`, …
    pub usage_unit: String,
    /// Sorted by `start_usage`.
    pub tiers: Vec<Tier>,
}

impl SkuPrice {
    fn from_wire(wire: SkuWire) -> std::result::Result<SkuPrice, String> {
        // The newest pricing when several are listed (RFC 3339 times in UTC sort as text).
        let info = wire
            .pricing_info
            .into_iter()
            .max_by(|a, b| a.effective_time.cmp(&b.effective_time))
            .ok_or_else(|| format!("SKU {} has no pricingInfo", wire.sku_id))?;
        let expression = info
            .pricing_expression
            .ok_or_else(|| format!("SKU {} has no pricingExpression", wire.sku_id))?;
        let mut tiers = expression
            .tiered_rates
            .into_iter()
            .map(|t| {
                Ok(Tier {
                    start_usage: t.start_usage_amount,
                    unit_price: Money::from_parts(
                        &t.unit_price.currency_code,
                        t.unit_price.units.as_deref(),
                        t.unit_price.nanos,
                    )
                    .map_err(|m| format!("SKU {}: {m}", wire.sku_id))?,
                })
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        tiers.sort_by(|a, b| a.start_usage.total_cmp(&b.start_usage));
        Ok(SkuPrice {
            sku_id: wire.sku_id,
            description: wire.description,
            resource_group: wire.category.resource_group,
            usage_type: wire.category.usage_type,
            service_regions: wire.service_regions,
            usage_unit: expression.usage_unit,
            tiers,
        })
    }

    /// The unit price of the tier in effect at `usage`: the largest `startUsageAmount` at
    /// or below it.
    pub fn price_at(&self, usage: f64) -> Option<&Money> {
        self.tiers
            .iter()
            .rev()
            .find(|t| t.start_usage <= usage)
            .map(|t| &t.unit_price)
    }
}

/// Spot (and preemptible) VMs have their own SKUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    OnDemand,
    Spot,
}

impl Usage {
    fn usage_type(self) -> &'static str {
        match self {
            Usage::OnDemand => "OnDemand",
            Usage::Spot => "Preemptible",
        }
    }
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Usage::OnDemand => "on demand",
            Usage::Spot => "spot",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resource {
    Core,
    Ram,
}

impl Resource {
    fn words(self) -> &'static str {
        match self {
            Resource::Core => "Instance Core running in ",
            Resource::Ram => "Instance Ram running in ",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Resource::Core => "h",
            Resource::Ram => "GiBy.h",
        }
    }
}

/// Rates of one machine family in one region.
#[derive(Clone, Debug, PartialEq)]
pub struct FamilyRates {
    pub cpu_core_hour: f64,
    pub memory_gib_hour: f64,
    pub currency: String,
    pub core_sku: String,
    pub ram_sku: String,
}

/// The display name the catalog's descriptions give a region, for the regions whose name
/// is certain; for the others the match relies on `serviceRegions` alone.
pub fn region_display_name(region: &str) -> Option<&'static str> {
    Some(match region {
        "us-central1" => "Iowa",
        "us-east1" => "South Carolina",
        "us-east4" => "Northern Virginia",
        "us-west1" => "Oregon",
        "us-west2" => "Los Angeles",
        "europe-west1" => "Belgium",
        "europe-west2" => "London",
        "europe-west3" => "Frankfurt",
        "europe-west4" => "Netherlands",
        "europe-north1" => "Finland",
        "asia-east1" => "Taiwan",
        "asia-northeast1" => "Tokyo",
        "asia-southeast1" => "Singapore",
        "australia-southeast1" => "Sydney",
        _ => return None,
    })
}

/// Words between the family and "Instance Core" that still name the plain family.
const FAMILY_QUALIFIERS: [&str; 4] = ["Predefined", "AMD", "Intel", "Arm"];
const EXCLUDED: [&str; 4] = ["Custom", "Sole Tenancy", "Commitment", "Extended"];

/// Whether `description` names `family`'s `resource` in `region` for `usage`.
fn description_matches(
    description: &str,
    family: &str,
    resource: Resource,
    usage: Usage,
    region: &str,
) -> bool {
    if EXCLUDED.iter().any(|word| description.contains(word)) {
        return false;
    }
    let rest = match usage {
        Usage::OnDemand => Some(description),
        Usage::Spot => description
            .strip_prefix("Spot Preemptible ")
            .or_else(|| description.strip_prefix("Preemptible ")),
    };
    let Some(rest) = rest
        .and_then(|r| r.strip_prefix(family))
        .and_then(|r| r.strip_prefix(' '))
    else {
        return false;
    };
    let mut rest = rest;
    for qualifier in FAMILY_QUALIFIERS {
        if let Some(after) = rest
            .strip_prefix(qualifier)
            .and_then(|r| r.strip_prefix(' '))
        {
            rest = after;
            break;
        }
    }
    let Some(place) = rest.strip_prefix(resource.words()) else {
        return false;
    };
    region_display_name(region).is_none_or(|name| place == name)
}

/// The Compute SKUs of one currency.
#[derive(Clone, Debug, PartialEq)]
pub struct PriceBook {
    pub currency: String,
    pub skus: Vec<SkuPrice>,
}

impl PriceBook {
    /// The Compute SKUs of `ListSkusResponse` pages. A SKU that cannot be read is left
    /// out with a warning: one odd SKU must not cost every price.
    fn add_page(&mut self, page: ListSkusWire) {
        for sku in page.skus {
            if sku.category.resource_family != "Compute" {
                continue;
            }
            match SkuPrice::from_wire(sku) {
                Ok(sku) => self.skus.push(sku),
                Err(message) => tracing::warn!(%message, "a Billing Catalog SKU was left out"),
            }
        }
    }

    /// Parses whole `ListSkusResponse` documents, e.g. recorded pages.
    pub fn from_pages(currency: &str, pages: &[&[u8]]) -> std::result::Result<PriceBook, String> {
        let mut book = PriceBook {
            currency: currency.to_owned(),
            skus: Vec::new(),
        };
        for page in pages {
            book.add_page(serde_json::from_slice(page).map_err(|e| e.to_string())?);
        }
        Ok(book)
    }

    fn find(
        &self,
        family: &str,
        resource: Resource,
        region: &str,
        usage: Usage,
    ) -> Result<(&SkuPrice, f64)> {
        let family_token = family.to_ascii_uppercase();
        let no_price = |message: String| Error::NoPrice {
            family: family.to_owned(),
            region: region.to_owned(),
            usage: usage.to_string(),
            message,
        };
        let candidates: Vec<&SkuPrice> = self
            .skus
            .iter()
            .filter(|s| s.usage_type == usage.usage_type())
            .filter(|s| s.service_regions.iter().any(|r| r == region))
            .filter(|s| description_matches(&s.description, &family_token, resource, usage, region))
            .collect();
        // A SKU for this region alone is more specific than a multi-region one.
        let single: Vec<&SkuPrice> = candidates
            .iter()
            .copied()
            .filter(|s| s.service_regions.len() == 1)
            .collect();
        let chosen = match (single.as_slice(), candidates.as_slice()) {
            ([one], _) | ([], [one]) => *one,
            ([], []) => {
                return Err(no_price(format!(
                    "no SKU \"{family_token} {}…\" with usage type {} lists {region}",
                    resource.words().trim_end(),
                    usage.usage_type()
                )));
            }
            (several, all) => {
                let several = if several.is_empty() { all } else { several };
                let ids: Vec<&str> = several.iter().map(|s| s.sku_id.as_str()).collect();
                return Err(no_price(format!(
                    "several SKUs match ({}); refusing to pick one",
                    ids.join(", ")
                )));
            }
        };
        if chosen.usage_unit != resource.unit() {
            return Err(no_price(format!(
                "SKU {} is priced per {:?}, not per {:?}",
                chosen.sku_id,
                chosen.usage_unit,
                resource.unit()
            )));
        }
        let price = chosen
            .price_at(0.0)
            .ok_or_else(|| no_price(format!("SKU {} has no tier", chosen.sku_id)))?;
        if price.nanos < 0 {
            return Err(no_price(format!(
                "SKU {} has a negative price",
                chosen.sku_id
            )));
        }
        if !price.currency.is_empty() && price.currency != self.currency {
            return Err(no_price(format!(
                "SKU {} is priced in {}, not {}",
                chosen.sku_id, price.currency, self.currency
            )));
        }
        Ok((chosen, price.as_f64()))
    }

    /// The hourly rates of `family` (`e2`, `n2d`, …) in `region` for `usage`.
    pub fn rates(&self, family: &str, region: &str, usage: Usage) -> Result<FamilyRates> {
        let (core, cpu) = self.find(family, Resource::Core, region, usage)?;
        let (ram, memory) = self.find(family, Resource::Ram, region, usage)?;
        Ok(FamilyRates {
            cpu_core_hour: cpu,
            memory_gib_hour: memory,
            currency: self.currency.clone(),
            core_sku: core.sku_id.clone(),
            ram_sku: ram.sku_id.clone(),
        })
    }
}

/// How the catalog is called: Google accepts an API key or an OAuth token.
#[derive(Clone)]
pub enum CatalogAuth {
    /// Sent as `X-Goog-Api-Key`, not `?key=`, so that it is in no URL an error could show.
    ApiKey(Secret),
    Token(Arc<TokenSource>),
    /// No credentials (test servers).
    None,
}

struct Fetched {
    at: Instant,
    book: Arc<PriceBook>,
}

/// The public Billing Catalog, cached per currency.
pub struct BillingCatalog {
    http: reqwest::Client,
    base: String,
    auth: CatalogAuth,
    service: String,
    ttl: Duration,
    page_size: u32,
    /// Held during a fetch, so that concurrent callers share it.
    books: tokio::sync::Mutex<BTreeMap<String, Fetched>>,
}

impl std::fmt::Debug for BillingCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingCatalog")
            .field("base", &self.base)
            .field("service", &self.service)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A price book and how old it is.
#[derive(Clone, Debug)]
pub struct Book {
    pub book: Arc<PriceBook>,
    pub age: Duration,
    /// Set when a refresh failed and this older book stands in.
    pub stale_because: Option<String>,
}

impl BillingCatalog {
    pub fn new(auth: CatalogAuth) -> Result<BillingCatalog> {
        BillingCatalog::with_base_url(auth, DEFAULT_CATALOG_URL)
    }

    pub fn with_base_url(auth: CatalogAuth, base: &str) -> Result<BillingCatalog> {
        Ok(BillingCatalog {
            http: client(base, "Billing Catalog base URL")?,
            base: trim_base(base),
            auth,
            service: COMPUTE_ENGINE_SERVICE.to_owned(),
            ttl: DEFAULT_CATALOG_TTL,
            page_size: DEFAULT_PAGE_SIZE,
            books: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    pub fn with_ttl(mut self, ttl: Duration) -> BillingCatalog {
        self.ttl = ttl;
        self
    }

    pub fn with_page_size(mut self, page_size: u32) -> BillingCatalog {
        self.page_size = page_size.max(1);
        self
    }

    /// The price book of `currency`: the cached one within the TTL, else a new fetch. When
    /// the fetch fails and an older book exists, the older book, marked stale.
    pub async fn book(&self, currency: &str) -> Result<Book> {
        let mut books = self.books.lock().await;
        if let Some(fetched) = books.get(currency)
            && fetched.at.elapsed() < self.ttl
        {
            return Ok(Book {
                book: fetched.book.clone(),
                age: fetched.at.elapsed(),
                stale_because: None,
            });
        }
        match self.fetch(currency).await {
            Ok(book) => {
                let book = Arc::new(book);
                books.insert(
                    currency.to_owned(),
                    Fetched {
                        at: Instant::now(),
                        book: book.clone(),
                    },
                );
                Ok(Book {
                    book,
                    age: Duration::ZERO,
                    stale_because: None,
                })
            }
            Err(error) => match books.get(currency) {
                Some(fetched) => {
                    tracing::warn!(%error, currency, "the Billing Catalog cannot be read; using older prices");
                    Ok(Book {
                        book: fetched.book.clone(),
                        age: fetched.at.elapsed(),
                        stale_because: Some(error.to_string()),
                    })
                }
                None => Err(error),
            },
        }
    }

    /// Every page of the service's SKUs in `currency`.
    pub async fn fetch(&self, currency: &str) -> Result<PriceBook> {
        let mut book = PriceBook {
            currency: currency.to_owned(),
            skus: Vec::new(),
        };
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut path = format!(
                "v1/services/{}/skus?currencyCode={}&pageSize={}",
                form_encode(&self.service),
                form_encode(currency),
                self.page_size
            );
            if let Some(token) = &token {
                path.push_str("&pageToken=");
                path.push_str(&form_encode(token));
            }
            let page: ListSkusWire = self.get(&path).await?.json()?;
            token = page.next_page_token.clone().filter(|t| !t.is_empty());
            book.add_page(page);
            if token.is_none() {
                tracing::info!(
                    currency,
                    skus = book.skus.len(),
                    "Billing Catalog prices read"
                );
                return Ok(book);
            }
        }
        Err(Error::InvalidResponse {
            service: SERVICE.to_owned(),
            operation: format!("GET v1/services/{}/skus", self.service),
            message: format!("still a nextPageToken after {MAX_PAGES} pages"),
        })
    }

    async fn get(&self, path: &str) -> Result<Reply> {
        // The operation names the path without its query: page tokens are opaque noise.
        let operation = format!("GET {}", path.split('?').next().unwrap_or(path));
        let mut request = self
            .http
            .get(format!("{}/{path}", self.base))
            .header("Accept", "application/json");
        match &self.auth {
            CatalogAuth::ApiKey(key) => {
                let mut value =
                    reqwest::header::HeaderValue::from_str(key.expose()).map_err(|_| {
                        Error::InvalidInput {
                            what: "Billing Catalog API key".to_owned(),
                            message: "not a valid header value".to_owned(),
                        }
                    })?;
                value.set_sensitive(true);
                request = request.header("X-Goog-Api-Key", value);
            }
            CatalogAuth::Token(tokens) => {
                let token = tokens.token().await?;
                let mut value = reqwest::header::HeaderValue::from_str(&format!(
                    "Bearer {}",
                    token.value().expose()
                ))
                .map_err(|_| Error::InvalidInput {
                    what: "Google access token".to_owned(),
                    message: "not a valid header value".to_owned(),
                })?;
                value.set_sensitive(true);
                request = request.header("Authorization", value);
            }
            CatalogAuth::None => {}
        }
        let response = request
            .send()
            .await
            .map_err(|e| connection_error(SERVICE, &operation, &e))?;
        Reply::read(response, SERVICE, &operation).await?.ok()
    }
}

/// A node pool as pricing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolShape {
    /// `e2`, `n2d`, …
    pub family: String,
    pub spot: bool,
    /// Its weight in a mix of families.
    pub nodes: u32,
}

/// The rates of a cluster's Cluster file, used when the catalog cannot price it.
#[derive(Clone, Debug, PartialEq)]
pub struct StaticRates {
    pub cpu_core_hour: f64,
    pub memory_gib_hour: f64,
    pub currency: String,
}

#[derive(Clone, Debug)]
struct PricedCluster {
    region: String,
    pools: Vec<PoolShape>,
    fallback: StaticRates,
}

/// The [`PriceSource`] of GKE clusters: catalog prices for their region and node pools,
/// the Cluster file's rates when the catalog cannot give them.
#[derive(Debug)]
pub struct CatalogPrices {
    catalog: Arc<BillingCatalog>,
    currency: String,
    clusters: RwLock<BTreeMap<String, PricedCluster>>,
}

impl CatalogPrices {
    /// Prices in `currency` (the catalog converts; `USD` is its own).
    pub fn new(catalog: Arc<BillingCatalog>, currency: &str) -> CatalogPrices {
        CatalogPrices {
            catalog,
            currency: currency.to_owned(),
            clusters: RwLock::new(BTreeMap::new()),
        }
    }

    /// Prices `cluster` (the broker's name) by `region` and `pools`; `fallback` are its
    /// Cluster file's rates.
    pub fn add(&self, cluster: &str, region: &str, pools: Vec<PoolShape>, fallback: StaticRates) {
        let mut clusters = self.clusters.write().unwrap_or_else(|p| p.into_inner());
        clusters.insert(
            cluster.to_owned(),
            PricedCluster {
                region: region.to_owned(),
                pools,
                fallback,
            },
        );
    }

    /// [`CatalogPrices::add`] with the region and pools of a GKE cluster.
    pub fn add_cluster(&self, cluster: &str, gke: &GkeCluster, fallback: StaticRates) {
        let pools = gke
            .node_pools
            .iter()
            .map(|p| PoolShape {
                family: p.family().to_owned(),
                spot: p.spot,
                nodes: p.node_count(),
            })
            .collect();
        self.add(cluster, gke.region(), pools, fallback);
    }

    /// The cluster's rates from `book`: each pool's family rates, weighted by its nodes
    /// (equally when every pool is empty).
    fn rates(book: &PriceBook, cluster: &PricedCluster) -> Result<(f64, f64, String)> {
        if cluster.pools.is_empty() {
            return Err(Error::InvalidInput {
                what: "pricing".to_owned(),
                message: "the cluster has no node pools to price".to_owned(),
            });
        }
        let all_empty = cluster.pools.iter().all(|p| p.nodes == 0);
        let (mut cpu, mut memory, mut weights) = (0.0, 0.0, 0.0);
        let mut families: Vec<String> = Vec::new();
        for pool in &cluster.pools {
            let usage = if pool.spot {
                Usage::Spot
            } else {
                Usage::OnDemand
            };
            let rates = book.rates(&pool.family, &cluster.region, usage)?;
            let weight = if all_empty {
                1.0
            } else {
                f64::from(pool.nodes)
            };
            cpu += weight * rates.cpu_core_hour;
            memory += weight * rates.memory_gib_hour;
            weights += weight;
            let name = match usage {
                Usage::OnDemand => pool.family.clone(),
                Usage::Spot => format!("{} spot", pool.family),
            };
            if !families.contains(&name) {
                families.push(name);
            }
        }
        Ok((cpu / weights, memory / weights, families.join(", ")))
    }

    fn fallback(cluster: &PricedCluster, reason: String) -> Quote {
        tracing::warn!(region = %cluster.region, %reason, "using the Cluster file's static rates");
        Quote {
            cpu_core_hour: cluster.fallback.cpu_core_hour,
            memory_gib_hour: cluster.fallback.memory_gib_hour,
            currency: cluster.fallback.currency.clone(),
            source: "static (Cluster file)".to_owned(),
            fallback_reason: Some(reason),
        }
    }
}

#[async_trait]
impl PriceSource for CatalogPrices {
    async fn quote(&self, cluster: &str) -> std::result::Result<Quote, PortError> {
        let priced = {
            let clusters = self.clusters.read().unwrap_or_else(|p| p.into_inner());
            clusters.get(cluster).cloned()
        };
        let Some(priced) = priced else {
            return Err(PortError::NotFound {
                cluster: cluster.to_owned(),
                what: "GKE pricing (no region and node pools registered)".to_owned(),
            });
        };
        let book = match self.catalog.book(&self.currency).await {
            Ok(book) => book,
            Err(error) => {
                return Ok(CatalogPrices::fallback(
                    &priced,
                    format!("the Billing Catalog cannot be read: {error}"),
                ));
            }
        };
        match CatalogPrices::rates(&book.book, &priced) {
            Ok((cpu, memory, families)) => Ok(Quote {
                cpu_core_hour: cpu,
                memory_gib_hour: memory,
                currency: book.book.currency.clone(),
                source: format!(
                    "billing catalog (Compute Engine {families} in {})",
                    priced.region
                ),
                fallback_reason: book.stale_because.map(|why| {
                    format!(
                        "the Billing Catalog cannot be read ({why}); prices from {} min ago",
                        book.age.as_secs() / 60
                    )
                }),
            }),
            Err(error) => Ok(CatalogPrices::fallback(&priced, error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_units_as_a_string_plus_nanos() {
        /// (units, nanos, total nano-units or the error's words)
        type Case = (
            Option<&'static str>,
            Option<i32>,
            std::result::Result<i64, &'static str>,
        );
        let cases: [Case; 7] = [
            (Some("0"), Some(26_460_000), Ok(26_460_000)),
            (None, Some(3_010_000), Ok(3_010_000)),
            (Some("2"), Some(500_000_000), Ok(2_500_000_000)),
            (Some("-1"), Some(-250_000_000), Ok(-1_250_000_000)),
            (Some("1"), Some(-1), Err("does not go with")),
            (Some("x"), None, Err("not an int64")),
            (Some("9223372036854775807"), None, Err("too large")),
        ];
        for (units, nanos, expected) in cases {
            match (Money::from_parts("USD", units, nanos), expected) {
                (Ok(money), Ok(total)) => assert_eq!(money.nanos, total),
                (Err(message), Err(words)) => assert!(message.contains(words), "{message}"),
                (got, want) => panic!("{units:?} {nanos:?}: {got:?} vs {want:?}"),
            }
        }
        let price = Money::from_parts("USD", Some("0"), Some(26_460_000)).expect("valid");
        assert!((price.as_f64() - 0.02646).abs() < 1e-15);
    }

    #[test]
    fn descriptions_match_family_resource_usage_and_region() {
        use Resource::{Core, Ram};
        use Usage::{OnDemand, Spot};
        let cases = [
            (
                "N4A Instance Core running in Iowa",
                "N4A",
                Core,
                OnDemand,
                "us-central1",
                true,
            ),
            (
                "N4A Instance Core running in Iowa",
                "N4",
                Core,
                OnDemand,
                "us-central1",
                false,
            ),
            (
                "N4A Instance Ram running in Iowa",
                "N4A",
                Ram,
                OnDemand,
                "us-central1",
                true,
            ),
            (
                "N4A Instance Ram running in Iowa",
                "N4A",
                Core,
                OnDemand,
                "us-central1",
                false,
            ),
            (
                "Spot Preemptible N4A Instance Core running in Iowa",
                "N4A",
                Core,
                Spot,
                "us-central1",
                true,
            ),
            (
                "Spot Preemptible N4A Instance Core running in Iowa",
                "N4A",
                Core,
                OnDemand,
                "us-central1",
                false,
            ),
            (
                "N1 Predefined Instance Core running in Iowa",
                "N1",
                Core,
                OnDemand,
                "us-central1",
                true,
            ),
            (
                "N2D AMD Instance Ram running in Belgium",
                "N2D",
                Ram,
                OnDemand,
                "europe-west1",
                true,
            ),
            (
                "N2 Custom Instance Core running in Iowa",
                "N2",
                Core,
                OnDemand,
                "us-central1",
                false,
            ),
            (
                "N2 Custom Extended Instance Ram running in Iowa",
                "N2",
                Ram,
                OnDemand,
                "us-central1",
                false,
            ),
            (
                "E2 Sole Tenancy Instance Core running in Iowa",
                "E2",
                Core,
                OnDemand,
                "us-central1",
                false,
            ),
            (
                "Commitment v1: E2 Cpu in Iowa for 1 Year",
                "E2",
                Core,
                OnDemand,
                "us-central1",
                false,
            ),
            (
                "E2 Instance Core running in Americas",
                "E2",
                Core,
                OnDemand,
                "us-central1",
                false,
            ),
            (
                "E2 Instance Core running in Oregon",
                "E2",
                Core,
                OnDemand,
                "us-central1",
                false,
            ),
            // A region whose display name is not in the table: serviceRegions decides.
            (
                "E2 Instance Core running in Doha",
                "E2",
                Core,
                OnDemand,
                "me-central1",
                true,
            ),
        ];
        for (description, family, resource, usage, region, expected) in cases {
            assert_eq!(
                description_matches(description, family, resource, usage, region),
                expected,
                "{description} / {family} {resource:?} {usage:?} {region}"
            );
        }
    }

    #[test]
    fn the_tier_is_the_largest_start_at_or_below_the_usage() {
        let money = |nanos| Money {
            currency: "USD".into(),
            nanos,
        };
        let sku = SkuPrice {
            sku_id: "S".into(),
            description: String::new(),
            resource_group: String::new(),
            usage_type: "OnDemand".into(),
            service_regions: vec![],
            usage_unit: "h".into(),
            tiers: vec![
                Tier {
                    start_usage: 0.0,
                    unit_price: money(30),
                },
                Tier {
                    start_usage: 100.0,
                    unit_price: money(20),
                },
                Tier {
                    start_usage: 1000.0,
                    unit_price: money(10),
                },
            ],
        };
        for (usage, nanos) in [(0.0, 30), (99.9, 30), (100.0, 20), (5000.0, 10)] {
            assert_eq!(sku.price_at(usage).map(|m| m.nanos), Some(nanos), "{usage}");
        }
        assert_eq!(sku.price_at(-1.0), None);
    }
}
