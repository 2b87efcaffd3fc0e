//! GKE members of `ferry serve`. A Cluster file of provider `gke` names one GKE cluster, or
//! a project and location whose every cluster joins (each a member of its GKE name, with
//! the file's labels, scope, overrides and prices). Each is reached at its endpoint with
//! its CA and a Google access token that a background task renews before it expires
//! (also under long watches), and priced from the Cloud Billing Catalog for its node
//! pools' machine families and region, the file's rates standing in when the catalog
//! cannot be read (the member says so).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use ferry_adapter_gke::{
    BillingCatalog, CatalogAuth, CatalogPrices, Gke, GkeNodePools, PoolRef, ServiceAccountKey,
    StaticRates, TokenSource,
};
use ferry_adapter_kubernetes::KubeCluster;
use ferry_policies::model::{Cluster, GkeConnection};
use ferry_ports::{ClusterPort, PriceSource, Provisioner};

use super::world::kube_port;
use serde::Deserialize;

/// `[gke]` of `ferry serve`: where Google's APIs are (tests point them at a local fake).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GkeSettings {
    /// The GKE API's base URL (default `https://container.googleapis.com/`).
    pub api_url: Option<String>,
    /// The Cloud Billing API's base URL (default `https://cloudbilling.googleapis.com/`).
    pub billing_url: Option<String>,
}

/// One GKE cluster as a member: its definition (named, priced), its port, and where its
/// prices come from.
pub struct Found {
    pub definition: Cluster,
    pub port: Arc<dyn ClusterPort>,
    pub price_source: String,
    /// Resizes its first node pool (`ferry cluster resize`).
    pub provisioner: Arc<dyn Provisioner>,
}

/// The members a `gke` Cluster file stands for.
pub async fn members(
    file: &Cluster,
    gke: &GkeConnection,
    settings: &GkeSettings,
    base: &Path,
) -> anyhow::Result<Vec<Found>> {
    let key_path = gke.credentials_file.as_ref().map(|p| {
        let path = PathBuf::from(p);
        if path.is_absolute() {
            path
        } else {
            base.join(path)
        }
    });
    let key = ServiceAccountKey::load(key_path.as_deref())
        .with_context(|| format!("cluster {}: the service-account key", file.name))?;
    let tokens = Arc::new(TokenSource::new(key)?);
    let client = match &settings.api_url {
        Some(url) => Gke::with_base_url(Arc::clone(&tokens), url)?,
        None => Gke::new(Arc::clone(&tokens))?,
    }
    .for_project(&gke.project)?;
    let client = Arc::new(client);
    let pools = Arc::new(GkeNodePools::new(Arc::clone(&client)));
    let clusters = match &gke.cluster {
        Some(name) => vec![client.cluster(&gke.location, name).await.with_context(|| {
            format!(
                "cluster {}: GKE cluster {name} in {}",
                file.name, gke.location
            )
        })?],
        None => {
            let list = client.list_clusters(&gke.location).await.with_context(|| {
                format!("cluster {}: the GKE clusters of {}", file.name, gke.project)
            })?;
            if list.is_partial() {
                tracing::warn!(file = %file.name, missing = ?list.missing_zones,
                    "some zones did not answer: the GKE clusters found are not all there are");
            }
            list.clusters
        }
    };
    let auth = CatalogAuth::Token(Arc::clone(&tokens));
    let catalog = match &settings.billing_url {
        Some(url) => BillingCatalog::with_base_url(auth, url)?,
        None => BillingCatalog::new(auth)?,
    };
    let prices = CatalogPrices::new(Arc::new(catalog), &file.pricing.currency);
    // One renewal task for every cluster this key reaches.
    let bearer = tokens
        .bearer()
        .await
        .with_context(|| format!("cluster {}: a Google access token", file.name))?;
    let mut found = Vec::new();
    for cluster in clusters {
        let name = match &gke.cluster {
            Some(_) => file.name.clone(),
            None => cluster.name.clone(),
        };
        let credentials = cluster.credentials(bearer.clone()).with_context(|| {
            format!(
                "GKE cluster {} has no endpoint yet ({:?})",
                cluster.name, cluster.status
            )
        })?;
        // The port's error names the cluster already.
        let kube = KubeCluster::connect(&name, &credentials, file.scope.namespaces.clone()).await?;
        prices.add_cluster(
            &name,
            &cluster,
            StaticRates {
                cpu_core_hour: file.pricing.cpu_core_hour,
                memory_gib_hour: file.pricing.memory_gib_hour,
                currency: file.pricing.currency.clone(),
            },
        );
        // The first pool is the one a resize changes (GKE's `default-pool` unless renamed).
        if let Some(pool) = cluster.node_pools.first() {
            pools.register(
                &name,
                PoolRef::new(&cluster.location, &cluster.name, &pool.name)?,
            );
        }
        let mut definition = file.clone();
        definition.name = name.clone();
        let price_source = match prices.quote(&name).await {
            Ok(quote) => {
                definition.pricing.cpu_core_hour = quote.cpu_core_hour;
                definition.pricing.memory_gib_hour = quote.memory_gib_hour;
                match quote.fallback_reason {
                    Some(reason) => format!("{} ({reason})", quote.source),
                    None => quote.source,
                }
            }
            Err(error) => format!("the Cluster file's rates (no quote: {error})"),
        };
        tracing::info!(cluster = %name, endpoint = ?cluster.endpoint_url, prices = %price_source,
            "GKE cluster joined");
        let port = kube_port(kube, &definition);
        found.push(Found {
            definition,
            port,
            price_source,
            provisioner: Arc::clone(&pools) as Arc<dyn Provisioner>,
        });
    }
    Ok(found)
}
