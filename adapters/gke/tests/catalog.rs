//! The Billing Catalog against a fake: paging, caching, matching, and quotes with their
//! fallbacks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fake, read};
use ferry_adapter_gke::{
    BillingCatalog, CatalogAuth, CatalogPrices, GkeCluster, PoolShape, PriceBook, StaticRates,
    Usage,
};
use ferry_ports::PriceSource;

const SKUS: &str = "GET /v1/services/6F81-5844-456A/skus";

fn pages() -> Vec<(u16, String)> {
    vec![
        (200, read("testdata/catalog/skus-page-1.json")),
        (200, read("testdata/catalog/skus-page-2.json")),
    ]
}

fn book() -> PriceBook {
    let one = read("testdata/catalog/skus-page-1.json");
    let two = read("testdata/catalog/skus-page-2.json");
    PriceBook::from_pages("USD", &[one.as_bytes(), two.as_bytes()]).expect("pages")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// (family, region, usage, core-hour, GiB-hour or the error's words)
#[test]
fn rates_of_families_and_regions() {
    let book = book();
    type Case = (
        &'static str,
        &'static str,
        Usage,
        Result<(f64, f64), &'static str>,
    );
    let cases: [Case; 8] = [
        (
            "n4a",
            "us-central1",
            Usage::OnDemand,
            Ok((0.02646, 0.00301)),
        ),
        (
            "e2",
            "europe-west4",
            Usage::OnDemand,
            Ok((0.024066, 0.003226)),
        ),
        (
            "e2",
            "us-central1",
            Usage::OnDemand,
            Ok((0.02181159, 0.00292353)),
        ),
        ("n2d", "europe-west4", Usage::Spot, Ok((0.0065, 0.00088))),
        (
            "n2d",
            "europe-west4",
            Usage::OnDemand,
            Ok((0.03036, 0.00407)),
        ),
        (
            "n1",
            "us-central1",
            Usage::OnDemand,
            Ok((0.031611, 0.004237)),
        ),
        (
            "c3",
            "europe-west4",
            Usage::OnDemand,
            Err("per \"GiBy.mo\""),
        ),
        (
            "e2",
            "asia-east1",
            Usage::OnDemand,
            Err("no SKU \"E2 Instance Core"),
        ),
    ];
    for (family, region, usage, expected) in cases {
        match (book.rates(family, region, usage), expected) {
            (Ok(rates), Ok((cpu, memory))) => {
                assert!(close(rates.cpu_core_hour, cpu), "{family}: {rates:?}");
                assert!(close(rates.memory_gib_hour, memory), "{family}: {rates:?}");
            }
            (Err(error), Err(words)) => assert!(error.to_string().contains(words), "{error}"),
            (got, want) => panic!("{family} {region}: {got:?} vs {want:?}"),
        }
    }
}

#[tokio::test]
async fn the_catalog_is_read_page_by_page_and_cached() {
    let fake = Fake::start().await;
    fake.on(SKUS, pages());
    let catalog = BillingCatalog::with_base_url(CatalogAuth::None, &fake.url(""))
        .expect("a client")
        .with_page_size(10);
    let book = catalog.book("USD").await.expect("a book");
    assert_eq!(book.book.skus.len(), 16, "Compute SKUs of both pages");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].target,
        "/v1/services/6F81-5844-456A/skus?currencyCode=USD&pageSize=10"
    );
    assert_eq!(
        requests[1].target,
        "/v1/services/6F81-5844-456A/skus?currencyCode=USD&pageSize=10&pageToken=page-2%20token%2Fwith%2Bodd%3Dchars"
    );
    catalog.book("USD").await.expect("cached");
    assert_eq!(fake.count(SKUS), 2);
}

fn fallback() -> StaticRates {
    StaticRates {
        cpu_core_hour: 0.05,
        memory_gib_hour: 0.006,
        currency: "USD".into(),
    }
}

#[tokio::test]
async fn quotes_weigh_pools_and_fall_back_with_a_reason() {
    let fake = Fake::start().await;
    fake.on(SKUS, pages());
    let catalog = Arc::new(
        BillingCatalog::with_base_url(CatalogAuth::None, &fake.url(""))
            .expect("a client")
            .with_ttl(Duration::ZERO),
    );
    let prices = CatalogPrices::new(catalog, "USD");
    let cluster = GkeCluster::parse(read("testdata/gke/cluster-regional.json").as_bytes())
        .expect("a cluster");
    prices.add_cluster("gke-a", &cluster, fallback());
    prices.add(
        "gke-c2",
        "europe-west4",
        vec![PoolShape {
            family: "c2".into(),
            spot: false,
            nodes: 3,
        }],
        fallback(),
    );

    // 6 e2 nodes on demand and 3 n2d spot nodes.
    let quote = prices.quote("gke-a").await.expect("a quote");
    assert!(
        close(quote.cpu_core_hour, (6.0 * 0.024066 + 3.0 * 0.0065) / 9.0),
        "{quote:?}"
    );
    assert!(
        close(
            quote.memory_gib_hour,
            (6.0 * 0.003226 + 3.0 * 0.00088) / 9.0
        ),
        "{quote:?}"
    );
    assert_eq!(
        quote.source,
        "billing catalog (Compute Engine e2, n2d spot in europe-west4)"
    );
    assert_eq!(quote.fallback_reason, None);

    // A family the catalog cannot price: the Cluster file's rates, saying why. (The TTL is
    // zero, so every quote reads the catalog again.)
    fake.on(SKUS, pages());
    let quote = prices.quote("gke-c2").await.expect("a quote");
    assert_eq!(
        (quote.cpu_core_hour, quote.source.as_str()),
        (0.05, "static (Cluster file)")
    );
    assert!(
        quote
            .fallback_reason
            .as_deref()
            .is_some_and(|r| r.contains("no SKU \"C2")),
        "{quote:?}"
    );

    // The catalog goes away: the last book, marked stale.
    fake.on(SKUS, vec![(503, String::new())]);
    let quote = prices.quote("gke-a").await.expect("a quote");
    assert!(quote.source.starts_with("billing catalog"), "{quote:?}");
    assert!(
        quote
            .fallback_reason
            .as_deref()
            .is_some_and(|r| r.contains("prices from")),
        "{quote:?}"
    );

    // Never reached: the Cluster file's rates.
    let nowhere = Arc::new(
        BillingCatalog::with_base_url(CatalogAuth::None, "http://127.0.0.1:9/").expect("a client"),
    );
    let prices = CatalogPrices::new(nowhere, "USD");
    prices.add_cluster("gke-a", &cluster, fallback());
    let quote = prices.quote("gke-a").await.expect("a quote");
    assert_eq!(quote.source, "static (Cluster file)");
    assert!(
        quote
            .fallback_reason
            .as_deref()
            .is_some_and(|r| r.contains("cannot be read")),
        "{quote:?}"
    );
    assert!(prices.quote("unknown").await.is_err());
}
