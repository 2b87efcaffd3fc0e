//! Static prices for simulated clusters.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ferry_ports::{PortError, PriceSource, Quote};

/// Hourly rates fixed at construction, one pair per cluster, in one currency.
#[derive(Clone, Debug, PartialEq)]
pub struct SimPrices {
    currency: String,
    rates: BTreeMap<String, (f64, f64)>,
}

impl SimPrices {
    /// An empty price list in `currency` (e.g. `"EUR"`).
    pub fn new(currency: impl Into<String>) -> SimPrices {
        SimPrices {
            currency: currency.into(),
            rates: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) the rates of `cluster`.
    pub fn with_rate(
        mut self,
        cluster: impl Into<String>,
        cpu_core_hour: f64,
        memory_gib_hour: f64,
    ) -> SimPrices {
        self.rates
            .insert(cluster.into(), (cpu_core_hour, memory_gib_hour));
        self
    }
}

#[async_trait]
impl PriceSource for SimPrices {
    async fn quote(&self, cluster: &str) -> Result<Quote, PortError> {
        let Some(&(cpu_core_hour, memory_gib_hour)) = self.rates.get(cluster) else {
            return Err(PortError::NotFound {
                cluster: cluster.to_owned(),
                what: "a price".to_owned(),
            });
        };
        Ok(Quote {
            cpu_core_hour,
            memory_gib_hour,
            currency: self.currency.clone(),
            source: "static".to_owned(),
            fallback_reason: None,
        })
    }
}
