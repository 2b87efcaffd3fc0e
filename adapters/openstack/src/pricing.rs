//! On-prem prices: a rate table, in the spirit of OpenCost's on-prem pricing, turned into
//! the [`Quote`] of a cluster whose workers are OpenStack servers. Pure: text in, rates out.
//!
//! A table is YAML ([`RateTable::parse_yaml`]; `docs/openstack-pricing.md` has the whole
//! format and a worked example) or OpenCost's custom-provider JSON
//! ([`RateTable::import_opencost_hourly`]). Every price is in the table's `currency`;
//! `egressGiB` (default 0) is the Cluster's `pricing.egressGiB`, which a [`Quote`] does not
//! carry. The prices come in three forms:
//!
//! - **Direct rates**: `cpuCoreHour` and `memoryGiBHour`, both, taken as they are.
//! - **Amortisation**: what the hosts cost to buy per host CPU (as Nova counts them) and
//!   per GiB, over `months`, plus what they cost to run per month, shared by the vCPUs and
//!   GiB that Nova's allocation ratios (`overcommit`) let onto them:
//!   `cpuCoreHour = (hardware.perCore + monthly.perCore × months) / (months × 730 ×
//!   overcommit.cpu)`, and likewise for memory with `perGiB` and `overcommit.memory`. A month
//!   is 730 hours, as in Ferry's cost model and in OpenCost. It assumes the hosts are filled
//!   to the ratio; emptier hosts cost more per vCPU.
//! - **Flavors**: what one server of a flavor costs per hour. A flavor's price is split
//!   between its vCPUs and its GiB as OpenCost splits a node price it knows only as a whole
//!   (`pkg/costmodel/costmodel.go`: `ramPrice = nodePrice / (cpu × cpuToRAMRatio + ramGB)`,
//!   `cpuPrice = ramPrice × cpuToRAMRatio`): in proportion to reference rates `c₀` and `m₀`,
//!   `cpuCoreHour = hourly × c₀ / (vcpus × c₀ + ramGiB × m₀)` and `memoryGiBHour = hourly ×
//!   m₀ / (vcpus × c₀ + ramGiB × m₀)`, so that `vcpus × cpuCoreHour + ramGiB ×
//!   memoryGiBHour = hourly` exactly (up to f64 rounding). The reference rates are the
//!   table's own direct or amortised rates when it has them (only their ratio matters), and
//!   otherwise OpenCost's defaults (`configs/default.json`: 0.031611 per core-hour and
//!   0.004237 per GiB-hour, about 7.46 GiB-hours to a core-hour), as OpenCost itself does.
//!
//! Combinations: exactly one of the direct rates and the amortisation, or `flavors` alone,
//! or `flavors` with one of the two. With both, a listed flavor is priced by its `hourly`
//! (the rates give only the ratio of the split) and a cluster whose flavor is not named gets
//! the rates. The direct rates together with an amortisation are refused: one would silently
//! win.
//!
//! Which rates a cluster gets ([`RateTable::quote`], [`RateTable::quote_mix`]):
//! - a table without flavors prices every core and GiB alike: the flavor does not matter;
//! - a Heat cluster's workers are all of one flavor (the template's `worker_flavor`
//!   parameter): its rates, by name. A name the table does not list is an error, never the
//!   table's other rates: a typo would otherwise price a cluster silently;
//! - workers of several flavors: the cluster's core cost over its cores and its memory cost
//!   over its GiB, `Σ countᵢ × vcpusᵢ × cpuᵢ / Σ countᵢ × vcpusᵢ` (and with `ramGiB` for
//!   memory). This is the flavors' rates weighted by count times size, not by count alone
//!   (one small and one large server are not half-and-half), and it keeps the total: the
//!   cluster's cores and GiB at these rates cost what its servers cost;
//! - the control plane's servers are in no rate: they are a cost of having the cluster,
//!   not of what runs on it.
//!
//! Money is f64, as in [`Quote`]. Nothing is rounded to cents here, and every rate is a
//! handful of f64 operations on the inputs (an amortised rate is a life's cost divided
//! once by the vCPU-hours of that life; a mix is one weighted sum per resource), so it is
//! within a few ulps of its exact value; the tests hold hand-computed values to 1e-12 and
//! check that a split keeps a server's price. Every number read is finite and at least 0,
//! and the divisors (`months`, `overcommit`, `vcpus`, `ramGiB`) are above 0, so every rate
//! is finite and at least 0.
//!
//! [`RateTablePrices`] is the [`PriceSource`] over rate tables: cluster name → table and
//! workers, with each quote computed when the cluster is added, so that an unknown flavor
//! is a configuration error at start-up rather than at planning time.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use ferry_ports::{PortError, PriceSource, Quote};
use yaml_rust2::{Yaml, YamlLoader};

/// Hours in a month, as `ferry_policies::HOURS_PER_MONTH` and OpenCost count them.
const HOURS_PER_MONTH: f64 = 730.0;

/// OpenCost's default core-hour price (`configs/default.json`): with
/// [`DEFAULT_MEMORY_GIB_HOUR`], the ratio that splits flavor prices when a table has no
/// rates of its own. Never a price by itself.
const DEFAULT_CPU_CORE_HOUR: f64 = 0.031611;
/// OpenCost's default GiB-hour price; see [`DEFAULT_CPU_CORE_HOUR`].
const DEFAULT_MEMORY_GIB_HOUR: f64 = 0.004237;

const TOP_FIELDS: [&str; 6] = [
    "currency",
    "egressGiB",
    "cpuCoreHour",
    "memoryGiBHour",
    "amortisation",
    "flavors",
];

/// A validated rate table (module docs): it always has rates, flavors or both, and when
/// it has both, the rates are not both 0 (they split the flavor prices).
#[derive(Clone, Debug, PartialEq)]
pub struct RateTable {
    /// The file's name, for messages and [`Quote::source`].
    name: String,
    currency: String,
    egress_gib: f64,
    rates: Option<Rates>,
    flavors: BTreeMap<String, Flavor>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Rates {
    cpu_core_hour: f64,
    memory_gib_hour: f64,
    basis: Basis,
}

/// Where a table's rates come from, for [`Quote::source`].
#[derive(Clone, Copy, Debug, PartialEq)]
enum Basis {
    Direct,
    Amortised { months: u32 },
    OpenCost,
}

impl Basis {
    fn describe(self) -> String {
        match self {
            Basis::Direct => "direct rates".to_owned(),
            Basis::Amortised { months } => format!("amortised over {months} months"),
            Basis::OpenCost => "OpenCost custom pricing, hourly".to_owned(),
        }
    }

    fn split(self) -> &'static str {
        match self {
            Basis::Direct => "split by the direct rates",
            Basis::Amortised { .. } => "split by the amortised rates",
            // An OpenCost import has no flavors; kept total for the match.
            Basis::OpenCost => "split by the OpenCost rates",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Flavor {
    vcpus: u32,
    ram_gib: f64,
    hourly: f64,
}

impl Flavor {
    /// The flavor's price per vCPU-hour and per GiB-hour, split in the ratio `c0 : m0`.
    /// `c0` and `m0` are never both 0 and the flavor has vCPUs and memory, so the divisor
    /// is above 0.
    fn rates(self, c0: f64, m0: f64) -> (f64, f64) {
        let whole = f64::from(self.vcpus) * c0 + self.ram_gib * m0;
        (self.hourly * c0 / whole, self.hourly * m0 / whole)
    }
}

/// Which servers a cluster's workers are, for [`RateTablePrices::add`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workers {
    /// Not known: the table's rates, whatever the flavor.
    Unnamed,
    /// Every worker is of this flavor (a Heat cluster's `worker_flavor`).
    Flavor(String),
    /// Workers of several flavors, with how many of each.
    Mix(Vec<(String, u32)>),
}

/// One wrong or missing field of a rate table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `flavors.m1.large.hourly`; empty for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a rate table cannot be read or cannot price a cluster. `table` is the file's name.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PricingError {
    #[error("{table}: not {format}: {message}")]
    Syntax {
        table: String,
        format: &'static str,
        message: String,
    },
    /// Every problem found, not only the first.
    #[error("{table}: {}", joined(.problems, "; "))]
    Invalid {
        table: String,
        problems: Vec<FieldError>,
    },
    #[error("{table}: no flavor {}; it prices {}", joined(.unknown, ", "), joined(.known, ", "))]
    UnknownFlavor {
        table: String,
        /// Quoted names, as given.
        unknown: Vec<String>,
        known: Vec<String>,
    },
    #[error("{table}: prices flavors only ({}); name the workers' flavor", joined(.known, ", "))]
    FlavorNeeded { table: String, known: Vec<String> },
    #[error("{table}: no workers to weight its flavors by (the counts add up to 0)")]
    NoWorkers { table: String },
}

fn joined<T: fmt::Display>(items: &[T], separator: &str) -> String {
    let texts: Vec<String> = items.iter().map(ToString::to_string).collect();
    texts.join(separator)
}

impl RateTable {
    /// A rate table from its YAML text; `name` (e.g. the file name) names it in messages
    /// and quotes.
    pub fn parse_yaml(text: &str, name: &str) -> Result<RateTable, PricingError> {
        let documents = YamlLoader::load_from_str(text).map_err(|error| PricingError::Syntax {
            table: name.to_owned(),
            format: "YAML",
            message: error.to_string(),
        })?;
        let mut reader = Reader::default();
        let table = match documents.as_slice() {
            [] => {
                reader.problem("", "empty (expected a rate table)");
                None
            }
            [root] => reader.table(root, name),
            _ => {
                let count = documents.len();
                reader.problem(
                    "",
                    format!("holds {count} YAML documents (a rate table is one)"),
                );
                None
            }
        };
        match table {
            Some(table) if reader.problems.is_empty() => Ok(table),
            _ => Err(PricingError::Invalid {
                table: name.to_owned(),
                problems: reader.problems,
            }),
        }
    }

    /// A rate table from OpenCost's custom-provider JSON file (`configs/default.json`'s
    /// shape), whose values are **hourly** USD unless `currencyCode` says otherwise. Values
    /// pushed through OpenCost's ConfigMap or Helm path are monthly; convert those first.
    ///
    /// Reads `CPU` and `RAM` (required), `internetNetworkEgress` and `currencyCode`; values
    /// are strings as OpenCost writes them (JSON numbers are taken too), and an empty
    /// string is unset, as in OpenCost. `provider`, when present, must be `custom`; a
    /// non-zero `discount` or `negotiatedDiscount` is refused rather than silently dropped.
    /// Every other field (spot, GPU, storage, load balancers, cloud keys) is ignored.
    pub fn import_opencost_hourly(text: &str, name: &str) -> Result<RateTable, PricingError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|error| PricingError::Syntax {
                table: name.to_owned(),
                format: "JSON",
                message: error.to_string(),
            })?;
        let mut problems = Vec::new();
        let table = opencost_table(&value, name, &mut problems);
        match table {
            Some(table) if problems.is_empty() => Ok(table),
            _ => Err(PricingError::Invalid {
                table: name.to_owned(),
                problems,
            }),
        }
    }

    /// The ISO 4217 code of every price in the table.
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// One GiB leaving a cluster priced by this table (the Cluster's `pricing.egressGiB`).
    pub fn egress_gib(&self) -> f64 {
        self.egress_gib
    }

    /// The rates of a cluster whose workers are all of `worker_flavor`, or of unnamed
    /// workers (module docs).
    pub fn quote(&self, worker_flavor: Option<&str>) -> Result<Quote, PricingError> {
        match (worker_flavor, self.rates) {
            (Some(flavor), _) if !self.flavors.is_empty() => self.quote_mix(&[(flavor, 1)]),
            (_, Some(rates)) => Ok(self.quote_of(
                rates.cpu_core_hour,
                rates.memory_gib_hour,
                rates.basis.describe(),
            )),
            (_, None) => Err(PricingError::FlavorNeeded {
                table: self.name.clone(),
                known: self.flavors.keys().cloned().collect(),
            }),
        }
    }

    /// The rates of a cluster with workers of several flavors, `(flavor, count)`, weighted
    /// by their cores and GiB (module docs). A flavor may appear more than once.
    pub fn quote_mix(&self, workers: &[(&str, u32)]) -> Result<Quote, PricingError> {
        if self.flavors.is_empty() {
            return self.quote(None);
        }
        let mut counts: BTreeMap<&str, (Flavor, u64)> = BTreeMap::new();
        let mut unknown: Vec<String> = Vec::new();
        for &(name, count) in workers {
            let quoted = format!("{name:?}");
            match self.flavors.get(name) {
                Some(&flavor) => counts.entry(name).or_insert((flavor, 0)).1 += u64::from(count),
                None if !unknown.contains(&quoted) => unknown.push(quoted),
                None => {}
            }
        }
        if !unknown.is_empty() {
            return Err(PricingError::UnknownFlavor {
                table: self.name.clone(),
                unknown,
                known: self.flavors.keys().cloned().collect(),
            });
        }
        counts.retain(|_, (_, count)| *count > 0);
        let (c0, m0, split) = match self.rates {
            Some(rates) => (
                rates.cpu_core_hour,
                rates.memory_gib_hour,
                rates.basis.split(),
            ),
            None => (
                DEFAULT_CPU_CORE_HOUR,
                DEFAULT_MEMORY_GIB_HOUR,
                "split by OpenCost's default ratio",
            ),
        };
        let mut flavors = counts.iter();
        let (cpu, memory, servers) = match (flavors.next(), flavors.next()) {
            (None, _) => {
                return Err(PricingError::NoWorkers {
                    table: self.name.clone(),
                });
            }
            // One flavor: its own rates, without the round trip through weighted sums.
            (Some((name, (flavor, _))), None) => {
                let (cpu, memory) = flavor.rates(c0, m0);
                (cpu, memory, format!("flavor {name}"))
            }
            _ => mixed_rates(&counts, c0, m0),
        };
        Ok(self.quote_of(cpu, memory, format!("{servers}, {split}")))
    }

    fn quote_of(&self, cpu_core_hour: f64, memory_gib_hour: f64, detail: String) -> Quote {
        Quote {
            cpu_core_hour,
            memory_gib_hour,
            currency: self.currency.clone(),
            source: format!("rate table {} ({detail})", self.name),
            fallback_reason: None,
        }
    }
}

/// The cluster's core cost over its cores and memory cost over its GiB, and the servers
/// in words (`3 m1.large + 2 r1.large`).
fn mixed_rates(counts: &BTreeMap<&str, (Flavor, u64)>, c0: f64, m0: f64) -> (f64, f64, String) {
    let mut cores = 0.0;
    let mut gib = 0.0;
    let mut core_cost = 0.0;
    let mut gib_cost = 0.0;
    let mut servers = Vec::new();
    for (name, (flavor, count)) in counts {
        // Exact as f64 below 2^53 vCPUs, far beyond any cluster.
        let flavor_cores = (count * u64::from(flavor.vcpus)) as f64;
        let flavor_gib = *count as f64 * flavor.ram_gib;
        let (cpu, memory) = flavor.rates(c0, m0);
        cores += flavor_cores;
        gib += flavor_gib;
        core_cost += flavor_cores * cpu;
        gib_cost += flavor_gib * memory;
        servers.push(format!("{count} {name}"));
    }
    (core_cost / cores, gib_cost / gib, servers.join(" + "))
}

/// What a bound on a number is, as messages say it.
#[derive(Clone, Copy)]
enum Bound {
    AtLeastZero,
    AboveZero,
}

impl Bound {
    fn admits(self, value: f64) -> bool {
        match self {
            Bound::AtLeastZero => value >= 0.0,
            Bound::AboveZero => value > 0.0,
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bound::AtLeastZero => ">= 0",
            Bound::AboveZero => "> 0",
        })
    }
}

/// A number that passed its bound, with YAML's `-0.0` made 0 so that no quote shows `-0`.
fn checked(value: f64, bound: Bound) -> Option<f64> {
    (value.is_finite() && bound.admits(value)).then_some(if value == 0.0 { 0.0 } else { value })
}

fn is_currency(text: &str) -> bool {
    text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase())
}

const CURRENCY_EXPECTED: &str = "expected three capital letters (an ISO 4217 code like USD or EUR)";

fn field_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `a, b or c` (with `conjunction` "or").
fn listed(names: &[&str], conjunction: &str) -> String {
    match names {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [init @ .., last] => format!("{} {conjunction} {last}", init.join(", ")),
    }
}

/// A YAML value as a message shows it: scalars as written, strings quoted.
fn shown(value: &Yaml) -> String {
    match value {
        Yaml::Real(text) => text.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::String(text) => format!("{text:?}"),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => "nothing".to_owned(),
        Yaml::Array(_) => "a list".to_owned(),
        Yaml::Hash(_) => "a mapping".to_owned(),
        Yaml::Alias(_) | Yaml::BadValue => "an unresolved alias".to_owned(),
    }
}

/// A mapping key as a name: flavor names such as `2` or `true` are read as YAML scalars.
fn key_name(key: &Yaml) -> Option<String> {
    match key {
        Yaml::String(text) | Yaml::Real(text) => Some(text.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

type Fields<'a> = BTreeMap<String, &'a Yaml>;

/// Reads a YAML rate table, collecting every problem instead of stopping at the first.
#[derive(Default)]
struct Reader {
    problems: Vec<FieldError>,
}

impl Reader {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(FieldError {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// The entries of the mapping at `path`, in file order.
    fn entries<'a>(
        &mut self,
        value: &'a Yaml,
        path: &str,
        expected: &str,
    ) -> Option<Vec<(String, &'a Yaml)>> {
        let Yaml::Hash(hash) = value else {
            self.problem(path, format!("expected {expected}, got {}", shown(value)));
            return None;
        };
        let mut entries = Vec::new();
        for (key, value) in hash {
            match key_name(key) {
                Some(name) => entries.push((name, value)),
                None => self.problem(path, format!("expected names as keys, got {}", shown(key))),
            }
        }
        Some(entries)
    }

    /// The fields of the mapping at `path`; names not in `known` are reported.
    fn fields<'a>(&mut self, value: &'a Yaml, path: &str, known: &[&str]) -> Option<Fields<'a>> {
        let expected = format!("a mapping of {}", listed(known, "and"));
        let mut fields = Fields::new();
        for (name, value) in self.entries(value, path, &expected)? {
            if known.contains(&name.as_str()) {
                fields.insert(name, value);
            } else {
                let expected = listed(known, "or");
                self.problem(
                    &field_path(path, &name),
                    format!("unknown field (expected {expected})"),
                );
            }
        }
        Some(fields)
    }

    fn required<'a>(&mut self, fields: &Fields<'a>, path: &str, name: &str) -> Option<&'a Yaml> {
        let value = fields.get(name).copied();
        if value.is_none() {
            self.problem(&field_path(path, name), "missing");
        }
        value
    }

    fn number(&mut self, value: &Yaml, path: &str, bound: Bound) -> Option<f64> {
        let number = match value {
            // Exact for every price anyone writes (below 2^53).
            Yaml::Integer(i) => Some(*i as f64),
            Yaml::Real(_) => value.as_f64(),
            _ => None,
        };
        if let Some(number) = number.and_then(|n| checked(n, bound)) {
            return Some(number);
        }
        let hint = match value {
            Yaml::String(text) if text.trim().parse::<f64>().is_ok() => {
                " (a quoted string: write numbers without quotes)"
            }
            _ => "",
        };
        self.problem(
            path,
            format!("expected a number {bound}, got {}{hint}", shown(value)),
        );
        None
    }

    fn whole(&mut self, value: &Yaml, path: &str) -> Option<u32> {
        if let Yaml::Integer(i) = value
            && let Ok(n @ 1..) = u32::try_from(*i)
        {
            return Some(n);
        }
        self.problem(
            path,
            format!("expected a whole number >= 1, got {}", shown(value)),
        );
        None
    }

    fn currency(&mut self, value: &Yaml, path: &str) -> Option<String> {
        match value {
            Yaml::String(text) if is_currency(text) => Some(text.clone()),
            _ => {
                self.problem(path, format!("{CURRENCY_EXPECTED}, got {}", shown(value)));
                None
            }
        }
    }

    /// Two numbers of one mapping, e.g. `{perCore, perGiB}`, both required.
    fn pair(
        &mut self,
        value: &Yaml,
        path: &str,
        names: [&str; 2],
        bound: Bound,
    ) -> Option<(f64, f64)> {
        let fields = self.fields(value, path, &names)?;
        let [first, second] = names.map(|name| {
            self.required(&fields, path, name)
                .and_then(|v| self.number(v, &field_path(path, name), bound))
        });
        Some((first?, second?))
    }

    fn table(&mut self, root: &Yaml, name: &str) -> Option<RateTable> {
        let fields = self.fields(root, "", &TOP_FIELDS)?;
        let currency = match fields.get("currency") {
            Some(value) => self.currency(value, "currency"),
            None => {
                self.problem(
                    "currency",
                    "missing (the currency of these prices, like USD or EUR)",
                );
                None
            }
        };
        let egress_gib = fields.get("egressGiB").map_or(Some(0.0), |value| {
            self.number(value, "egressGiB", Bound::AtLeastZero)
        });
        let direct = self.direct(&fields);
        let amortised = fields
            .get("amortisation")
            .map(|value| self.amortisation(value));
        let flavors = fields.get("flavors").map(|value| self.flavors(value));
        // Each form is None when absent and Some(None) when present but wrong.
        let rates = match (direct, amortised) {
            (Some(_), Some(_)) => {
                self.problem(
                    "amortisation",
                    "cannot be combined with cpuCoreHour and memoryGiBHour (give the rates or \
                     what they are amortised from, not both)",
                );
                Some(None)
            }
            (direct, amortised) => direct.or(amortised),
        };
        match (&rates, &flavors) {
            (None, None) => self.problem(
                "",
                "no prices: give cpuCoreHour and memoryGiBHour, amortisation, or flavors",
            ),
            (Some(Some(rates)), Some(_))
                if rates.cpu_core_hour == 0.0 && rates.memory_gib_hour == 0.0 =>
            {
                self.problem(
                    "flavors",
                    "cannot split a flavor's price between cores and memory in the ratio of \
                     rates that are both 0",
                );
            }
            _ => {}
        }
        let rates = match rates {
            Some(rates) => Some(rates?),
            None => None,
        };
        let flavors = match flavors {
            Some(flavors) => flavors?,
            None => BTreeMap::new(),
        };
        Some(RateTable {
            name: name.to_owned(),
            currency: currency?,
            egress_gib: egress_gib?,
            rates,
            flavors,
        })
    }

    /// `cpuCoreHour` and `memoryGiBHour`: None when neither is there.
    fn direct(&mut self, fields: &Fields<'_>) -> Option<Option<Rates>> {
        let [cpu, memory] = ["cpuCoreHour", "memoryGiBHour"].map(|name| {
            fields
                .get(name)
                .map(|value| self.number(value, name, Bound::AtLeastZero))
        });
        match (cpu, memory) {
            (None, None) => None,
            (Some(cpu), Some(memory)) => Some(cpu.zip(memory).map(|(cpu, memory)| Rates {
                cpu_core_hour: cpu,
                memory_gib_hour: memory,
                basis: Basis::Direct,
            })),
            (Some(_), None) | (None, Some(_)) => {
                let absent = if cpu.is_none() {
                    "cpuCoreHour"
                } else {
                    "memoryGiBHour"
                };
                self.problem(
                    absent,
                    "missing (cpuCoreHour and memoryGiBHour come together)",
                );
                Some(None)
            }
        }
    }

    fn amortisation(&mut self, value: &Yaml) -> Option<Rates> {
        let path = "amortisation";
        let fields = self.fields(
            value,
            path,
            &["months", "hardware", "monthly", "overcommit"],
        )?;
        let months = self
            .required(&fields, path, "months")
            .and_then(|v| self.whole(v, "amortisation.months"));
        let per = ["perCore", "perGiB"];
        let hardware = self
            .required(&fields, path, "hardware")
            .and_then(|v| self.pair(v, "amortisation.hardware", per, Bound::AtLeastZero));
        let monthly = self
            .required(&fields, path, "monthly")
            .and_then(|v| self.pair(v, "amortisation.monthly", per, Bound::AtLeastZero));
        let overcommit = self.required(&fields, path, "overcommit").and_then(|v| {
            self.pair(
                v,
                "amortisation.overcommit",
                ["cpu", "memory"],
                Bound::AboveZero,
            )
        });
        let months = months?;
        let ((buy_core, buy_gib), (run_core, run_gib)) = (hardware?, monthly?);
        let (vcpus_per_core, gib_per_gib) = overcommit?;
        // One division each, from the inputs: the whole life's cost of a host CPU (or GiB)
        // over the vCPU-hours (or GiB-hours) it provides in that life.
        let months_f = f64::from(months);
        let hours = months_f * HOURS_PER_MONTH;
        Some(Rates {
            cpu_core_hour: (buy_core + run_core * months_f) / (hours * vcpus_per_core),
            memory_gib_hour: (buy_gib + run_gib * months_f) / (hours * gib_per_gib),
            basis: Basis::Amortised { months },
        })
    }

    fn flavors(&mut self, value: &Yaml) -> Option<BTreeMap<String, Flavor>> {
        let entries = self.entries(value, "flavors", "a mapping of flavor names to prices")?;
        if entries.is_empty() {
            self.problem("flavors", "expected at least one flavor");
            return None;
        }
        let mut flavors = BTreeMap::new();
        let mut complete = true;
        for (name, value) in entries {
            let path = field_path("flavors", &name);
            match self.flavor(value, &path) {
                Some(flavor) => {
                    flavors.insert(name, flavor);
                }
                None => complete = false,
            }
        }
        complete.then_some(flavors)
    }

    fn flavor(&mut self, value: &Yaml, path: &str) -> Option<Flavor> {
        let fields = self.fields(value, path, &["vcpus", "ramGiB", "hourly"])?;
        let vcpus = self
            .required(&fields, path, "vcpus")
            .and_then(|v| self.whole(v, &field_path(path, "vcpus")));
        let ram_gib = self
            .required(&fields, path, "ramGiB")
            .and_then(|v| self.number(v, &field_path(path, "ramGiB"), Bound::AboveZero));
        let hourly = self
            .required(&fields, path, "hourly")
            .and_then(|v| self.number(v, &field_path(path, "hourly"), Bound::AtLeastZero));
        Some(Flavor {
            vcpus: vcpus?,
            ram_gib: ram_gib?,
            hourly: hourly?,
        })
    }
}

/// A JSON value as a message shows it.
fn shown_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => format!("{text:?}"),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Null => "null".to_owned(),
        serde_json::Value::Array(_) => "a list".to_owned(),
        serde_json::Value::Object(_) => "an object".to_owned(),
    }
}

/// Absent, or an empty string: OpenCost's "unset".
fn unset(value: Option<&serde_json::Value>) -> bool {
    match value {
        None => true,
        Some(serde_json::Value::String(text)) => text.is_empty(),
        Some(_) => false,
    }
}

/// An OpenCost price: a string-encoded number, or a JSON number. Unset means `default`, or
/// a problem when there is none.
fn opencost_price(
    object: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    default: Option<f64>,
    problems: &mut Vec<FieldError>,
) -> Option<f64> {
    let value = object.get(key);
    let Some(value) = value.filter(|_| !unset(value)) else {
        if default.is_none() {
            push(problems, key, "missing".to_owned());
        }
        return default;
    };
    let number = match value {
        serde_json::Value::String(text) => text.parse::<f64>().ok(),
        serde_json::Value::Number(n) => n.as_f64(),
        _ => None,
    };
    let number = number.and_then(|n| checked(n, Bound::AtLeastZero));
    if number.is_none() {
        let got = shown_json(value);
        push(problems, key, format!("expected a number >= 0, got {got}"));
    }
    number
}

fn push(problems: &mut Vec<FieldError>, path: &str, message: String) {
    problems.push(FieldError {
        path: path.to_owned(),
        message,
    });
}

/// The rates of an OpenCost custom-pricing object (see [`RateTable::import_opencost_hourly`]).
fn opencost_table(
    value: &serde_json::Value,
    name: &str,
    problems: &mut Vec<FieldError>,
) -> Option<RateTable> {
    let Some(object) = value.as_object() else {
        let got = shown_json(value);
        push(
            problems,
            "",
            format!("expected a JSON object of OpenCost custom pricing, got {got}"),
        );
        return None;
    };
    if let Some(provider) = object.get("provider")
        && provider.as_str() != Some("custom")
    {
        let got = shown_json(provider);
        push(
            problems,
            "provider",
            format!("expected \"custom\" (OpenCost's on-prem pricing), got {got}"),
        );
    }
    for key in ["discount", "negotiatedDiscount"] {
        let value = object.get(key);
        let zero = unset(value)
            || value
                .and_then(serde_json::Value::as_str)
                .is_some_and(|text| text.trim_end_matches('%').parse::<f64>() == Ok(0.0));
        if let Some(value) = value.filter(|_| !zero) {
            let got = shown_json(value);
            push(
                problems,
                key,
                format!(
                    "expected none (Ferry does not apply OpenCost's discounts: fold them into \
                     CPU and RAM), got {got}"
                ),
            );
        }
    }
    let currency = match object.get("currencyCode") {
        value if unset(value) => Some("USD".to_owned()),
        Some(serde_json::Value::String(text)) if is_currency(text) => Some(text.clone()),
        Some(value) => {
            let got = shown_json(value);
            push(
                problems,
                "currencyCode",
                format!("{CURRENCY_EXPECTED}, got {got}"),
            );
            None
        }
        None => None,
    };
    let cpu = opencost_price(object, "CPU", None, problems);
    let memory = opencost_price(object, "RAM", None, problems);
    let egress = opencost_price(object, "internetNetworkEgress", Some(0.0), problems);
    Some(RateTable {
        name: name.to_owned(),
        currency: currency?,
        egress_gib: egress?,
        rates: Some(Rates {
            cpu_core_hour: cpu?,
            memory_gib_hour: memory?,
            basis: Basis::OpenCost,
        }),
        flavors: BTreeMap::new(),
    })
}

/// The [`PriceSource`] of clusters priced by rate tables: each cluster's quote, computed
/// when it is added.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateTablePrices {
    quotes: BTreeMap<String, Quote>,
}

impl RateTablePrices {
    /// Prices `cluster` by `table` for its `workers` (replacing an earlier entry); fails,
    /// and adds nothing, when the table cannot price those workers.
    pub fn add(
        &mut self,
        cluster: &str,
        table: &RateTable,
        workers: &Workers,
    ) -> Result<(), PricingError> {
        let quote = match workers {
            Workers::Unnamed => table.quote(None)?,
            Workers::Flavor(flavor) => table.quote(Some(flavor))?,
            Workers::Mix(mix) => {
                let mix: Vec<(&str, u32)> = mix
                    .iter()
                    .map(|(flavor, count)| (flavor.as_str(), *count))
                    .collect();
                table.quote_mix(&mix)?
            }
        };
        self.quotes.insert(cluster.to_owned(), quote);
        Ok(())
    }
}

#[async_trait]
impl PriceSource for RateTablePrices {
    async fn quote(&self, cluster: &str) -> Result<Quote, PortError> {
        self.quotes
            .get(cluster)
            .cloned()
            .ok_or_else(|| PortError::NotFound {
                cluster: cluster.to_owned(),
                what: "a rate table".to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The brief's amortisation: (310 + 2.1 × 36) / (36 × 730 × 4) = 385.6 / 105120 per
    /// vCPU-hour and (4.2 + 0.05 × 36) / (36 × 730 × 1) = 6 / 26280 = 24 / 105120 per
    /// GiB-hour, so c₀ : m₀ = 385.6 : 24 = 241 : 15.
    const AMORTISATION: &str = "amortisation:
  months: 36
  hardware: {perCore: 310.0, perGiB: 4.2}
  monthly: {perCore: 2.1, perGiB: 0.05}
  overcommit: {cpu: 4.0, memory: 1.0}
";

    /// Equal to within a few ulps: the expectations below are computed by hand and
    /// written as fractions, whose f64 value is itself rounded.
    fn close(got: f64, expected: f64) -> bool {
        (got - expected).abs() <= 1e-12 * expected.abs().max(1e-300)
    }

    fn table(yaml: &str) -> RateTable {
        RateTable::parse_yaml(yaml, "rates.yaml").expect("a valid rate table")
    }

    /// Table: a rate table, the worker flavor, the expected rates (by hand) and the
    /// quote's source.
    #[test]
    fn rates_of_each_form() {
        let cases: [(String, Option<&str>, f64, f64, &str); 10] = [
            (
                "currency: EUR\ncpuCoreHour: 0.021\nmemoryGiBHour: 0.0028\n".to_owned(),
                None,
                0.021,
                0.0028,
                "rate table rates.yaml (direct rates)",
            ),
            // Without flavors, the flavor does not matter.
            (
                "currency: EUR\ncpuCoreHour: 0.021\nmemoryGiBHour: 0.0028\n".to_owned(),
                Some("m1.large"),
                0.021,
                0.0028,
                "rate table rates.yaml (direct rates)",
            ),
            (
                format!("currency: EUR\n{AMORTISATION}"),
                None,
                385.6 / 105120.0,
                6.0 / 26280.0,
                "rate table rates.yaml (amortised over 36 months)",
            ),
            // No overcommit of cpu, memory given to VMs at 1.5 GiB per GiB, 12 months,
            // no running costs: 120 / (12 × 730 × 1) = 120 / 8760 and 3 / (12 × 730 × 1.5)
            // = 3 / 13140.
            (
                "currency: EUR\namortisation:\n  months: 12\n  hardware: {perCore: 120, perGiB: 3}\n  monthly: {perCore: 0, perGiB: 0}\n  overcommit: {cpu: 1, memory: 1.5}\n".to_owned(),
                None,
                120.0 / 8760.0,
                3.0 / 13140.0,
                "rate table rates.yaml (amortised over 12 months)",
            ),
            // Direct rates 0.021 : 0.0028 = 15 : 2; m1.large: 0.19 × 15 / (15 × 4 + 2 × 8)
            // = 2.85 / 76 = 0.0375 per vCPU-hour, 0.19 × 2 / 76 = 0.005 per GiB-hour.
            (
                "currency: EUR\ncpuCoreHour: 0.021\nmemoryGiBHour: 0.0028\nflavors:\n  m1.large: {vcpus: 4, ramGiB: 8, hourly: 0.19}\n".to_owned(),
                Some("m1.large"),
                0.0375,
                0.005,
                "rate table rates.yaml (flavor m1.large, split by the direct rates)",
            ),
            // The same table without a flavor: its direct rates.
            (
                "currency: EUR\ncpuCoreHour: 0.021\nmemoryGiBHour: 0.0028\nflavors:\n  m1.large: {vcpus: 4, ramGiB: 8, hourly: 0.19}\n".to_owned(),
                None,
                0.021,
                0.0028,
                "rate table rates.yaml (direct rates)",
            ),
            // 241 : 15; m1.large: 0.19 × 241 / (241 × 4 + 15 × 8) = 45.79 / 1084, and
            // 0.19 × 15 / 1084 = 2.85 / 1084.
            (
                format!(
                    "currency: EUR\n{AMORTISATION}flavors:\n  m1.large: {{vcpus: 4, ramGiB: 8, hourly: 0.19}}\n"
                ),
                Some("m1.large"),
                45.79 / 1084.0,
                2.85 / 1084.0,
                "rate table rates.yaml (flavor m1.large, split by the amortised rates)",
            ),
            // OpenCost's default ratio: 0.19 × 0.031611 / (4 × 0.031611 + 8 × 0.004237)
            // = 0.00600609 / 0.16034, and 0.19 × 0.004237 / 0.16034 = 0.00080503 / 0.16034.
            (
                "currency: USD\nflavors:\n  m1.large: {vcpus: 4, ramGiB: 8, hourly: 0.19}\n"
                    .to_owned(),
                Some("m1.large"),
                0.00600609 / 0.16034,
                0.00080503 / 0.16034,
                "rate table rates.yaml (flavor m1.large, split by OpenCost's default ratio)",
            ),
            // Half a GiB, 15 : 2: 0.01 × 15 / (15 + 2 × 0.5) = 0.15 / 16 = 0.009375, and
            // 0.01 × 2 / 16 = 0.00125.
            (
                "currency: EUR\ncpuCoreHour: 0.021\nmemoryGiBHour: 0.0028\nflavors:\n  m1.tiny: {vcpus: 1, ramGiB: 0.5, hourly: 0.01}\n".to_owned(),
                Some("m1.tiny"),
                0.009375,
                0.00125,
                "rate table rates.yaml (flavor m1.tiny, split by the direct rates)",
            ),
            // Memory free in the rates: the whole price goes to the cores, 0.2 / 4 = 0.05.
            (
                "currency: EUR\ncpuCoreHour: 0.02\nmemoryGiBHour: 0\nflavors:\n  c1: {vcpus: 4, ramGiB: 4, hourly: 0.2}\n".to_owned(),
                Some("c1"),
                0.05,
                0.0,
                "rate table rates.yaml (flavor c1, split by the direct rates)",
            ),
        ];
        for (yaml, flavor, cpu, memory, source) in cases {
            let quote = table(&yaml).quote(flavor).expect("priced");
            assert!(
                close(quote.cpu_core_hour, cpu) && close(quote.memory_gib_hour, memory),
                "{yaml}{flavor:?}: got {} and {}, expected {cpu} and {memory}",
                quote.cpu_core_hour,
                quote.memory_gib_hour,
            );
            assert_eq!(quote.source, source, "{yaml}");
            assert_eq!(quote.fallback_reason, None);
        }
    }

    /// Table: workers of several flavors, and the rates by hand. 241 : 15 as above;
    /// m1.large {4, 8, 0.19}: 45.79 / 1084 and 2.85 / 1084 (the cores cost 4 × 45.79 /
    /// 1084 = 183.16 / 1084 an hour, the memory 8 × 2.85 / 1084 = 22.8 / 1084);
    /// r1.large {4, 32, 0.30}: 0.30 × 241 / (964 + 480) = 72.3 / 1444 and 4.5 / 1444 (cores
    /// 289.2 / 1444, memory 144 / 1444).
    #[test]
    fn mixed_flavors_are_weighted_by_their_cores_and_gib() {
        let table = table(&format!(
            "currency: EUR\n{AMORTISATION}flavors:\n  m1.large: {{vcpus: 4, ramGiB: 8, hourly: 0.19}}\n  r1.large: {{vcpus: 4, ramGiB: 32, hourly: 0.30}}\n"
        ));
        type Mix<'a> = &'a [(&'a str, u32)];
        let cases: [(Mix<'_>, f64, f64, &str); 4] = [
            // 3 + 2 servers: cores (3 × 183.16 / 1084 + 2 × 289.2 / 1444) / 20, memory
            // (3 × 22.8 / 1084 + 2 × 144 / 1444) / (24 + 64).
            (
                &[("m1.large", 3), ("r1.large", 2)],
                (3.0 * 183.16 / 1084.0 + 2.0 * 289.2 / 1444.0) / 20.0,
                (3.0 * 22.8 / 1084.0 + 2.0 * 144.0 / 1444.0) / 88.0,
                "3 m1.large + 2 r1.large",
            ),
            // A flavor named twice counts once with both counts: 1 + 1 m1.large, 1 r1.large.
            (
                &[("r1.large", 1), ("m1.large", 1), ("m1.large", 1)],
                (2.0 * 183.16 / 1084.0 + 289.2 / 1444.0) / 12.0,
                (2.0 * 22.8 / 1084.0 + 144.0 / 1444.0) / 48.0,
                "2 m1.large + 1 r1.large",
            ),
            // Counts of 0 weigh nothing: r1.large's own rates.
            (
                &[("m1.large", 0), ("r1.large", 5)],
                72.3 / 1444.0,
                4.5 / 1444.0,
                "flavor r1.large",
            ),
            (
                &[("m1.large", 7)],
                45.79 / 1084.0,
                2.85 / 1084.0,
                "flavor m1.large",
            ),
        ];
        for (workers, cpu, memory, servers) in cases {
            let quote = table.quote_mix(workers).expect("priced");
            assert!(
                close(quote.cpu_core_hour, cpu) && close(quote.memory_gib_hour, memory),
                "{workers:?}: got {} and {}, expected {cpu} and {memory}",
                quote.cpu_core_hour,
                quote.memory_gib_hour,
            );
            assert_eq!(
                quote.source,
                format!("rate table rates.yaml ({servers}, split by the amortised rates)")
            );
            // The cluster's cores and GiB at the quoted rates cost what its servers cost.
            let size: [(f64, f64, f64); 2] = [(4.0, 8.0, 0.19), (4.0, 32.0, 0.30)];
            let (mut cores, mut gib, mut hourly) = (0.0, 0.0, 0.0);
            for &(name, count) in workers {
                let (v, r, p) = size[usize::from(name == "r1.large")];
                let n = f64::from(count);
                (cores, gib, hourly) = (cores + n * v, gib + n * r, hourly + n * p);
            }
            let total = cores * quote.cpu_core_hour + gib * quote.memory_gib_hour;
            assert!(close(total, hourly), "{workers:?}: {total} != {hourly}");
        }
        // One flavor alone gives exactly what `quote` gives.
        assert_eq!(
            table.quote_mix(&[("m1.large", 3)]).expect("priced"),
            table.quote(Some("m1.large")).expect("priced")
        );
    }

    #[test]
    fn a_flavor_split_keeps_the_server_price() {
        // Flavor sizes and prices far apart, under each kind of ratio.
        let flavors = "flavors:\n  a: {vcpus: 1, ramGiB: 0.5, hourly: 0.007}\n  b: {vcpus: 96, ramGiB: 768, hourly: 11.13}\n  c: {vcpus: 3, ramGiB: 7, hourly: 0.1}\n";
        for rates in [
            "cpuCoreHour: 0.021\nmemoryGiBHour: 0.0028\n",
            AMORTISATION,
            "",
        ] {
            let table = table(&format!("currency: EUR\n{rates}{flavors}"));
            for (name, vcpus, ram, hourly) in [
                ("a", 1.0, 0.5, 0.007),
                ("b", 96.0, 768.0, 11.13),
                ("c", 3.0, 7.0, 0.1),
            ] {
                let quote = table.quote(Some(name)).expect("priced");
                let total = vcpus * quote.cpu_core_hour + ram * quote.memory_gib_hour;
                assert!(
                    (total - hourly).abs() <= 4.0 * f64::EPSILON * hourly,
                    "{name}: {total}"
                );
            }
        }
    }

    /// Table: a file and its whole message.
    #[test]
    fn every_error_message() {
        let valid_flavor = "m1.large: {vcpus: 4, ramGiB: 8, hourly: 0.19}";
        let cases: Vec<(String, &str)> = vec![
            (
                "currency: EUR\ncpuCoreHour: 0.021\nmemoryGiBHour: 0.0028\nflavors:\n  m1.large: {vcpus: 4, ramGiB: 8, hourly: abc}\n".to_owned(),
                "rates.yaml: flavors.m1.large.hourly: expected a number >= 0, got \"abc\"",
            ),
            (
                "cpuCoreHour: 0.021\nmemoryGiBHour: 0.0028\n".to_owned(),
                "rates.yaml: currency: missing (the currency of these prices, like USD or EUR)",
            ),
            (
                "currency: eur\ncpuCoreHour: 0.021\nmemoryGiBHour: 0.0028\n".to_owned(),
                "rates.yaml: currency: expected three capital letters (an ISO 4217 code like USD or EUR), got \"eur\"",
            ),
            (
                "currency: EUR\ncpuHour: 0.02\ncpuCoreHour: 0.021\nmemoryGiBHour: 0.0028\n".to_owned(),
                "rates.yaml: cpuHour: unknown field (expected currency, egressGiB, cpuCoreHour, memoryGiBHour, amortisation or flavors)",
            ),
            (
                "currency: EUR\n".to_owned(),
                "rates.yaml: no prices: give cpuCoreHour and memoryGiBHour, amortisation, or flavors",
            ),
            (
                "currency: EUR\ncpuCoreHour: 0.02\n".to_owned(),
                "rates.yaml: memoryGiBHour: missing (cpuCoreHour and memoryGiBHour come together)",
            ),
            (
                "currency: EUR\nmemoryGiBHour: 0.02\n".to_owned(),
                "rates.yaml: cpuCoreHour: missing (cpuCoreHour and memoryGiBHour come together)",
            ),
            (
                format!("currency: EUR\ncpuCoreHour: 0.021\nmemoryGiBHour: 0.0028\n{AMORTISATION}"),
                "rates.yaml: amortisation: cannot be combined with cpuCoreHour and memoryGiBHour (give the rates or what they are amortised from, not both)",
            ),
            (
                "currency: EUR\ncpuCoreHour: -0.1\nmemoryGiBHour: .inf\n".to_owned(),
                "rates.yaml: cpuCoreHour: expected a number >= 0, got -0.1; memoryGiBHour: expected a number >= 0, got .inf",
            ),
            (
                "currency: EUR\ncpuCoreHour: '0.02'\nmemoryGiBHour: [1]\negressGiB:\n".to_owned(),
                "rates.yaml: egressGiB: expected a number >= 0, got nothing; cpuCoreHour: expected a number >= 0, got \"0.02\" (a quoted string: write numbers without quotes); memoryGiBHour: expected a number >= 0, got a list",
            ),
            (
                "currency: EUR\namortisation:\n  months: 2.5\n  hardware: {perCore: 310.0, perCPU: 1}\n  overcommit: {cpu: 0, memory: 1}\n".to_owned(),
                "rates.yaml: amortisation.months: expected a whole number >= 1, got 2.5; amortisation.hardware.perCPU: unknown field (expected perCore or perGiB); amortisation.hardware.perGiB: missing; amortisation.monthly: missing; amortisation.overcommit.cpu: expected a number > 0, got 0",
            ),
            (
                "currency: EUR\namortisation: 36\n".to_owned(),
                "rates.yaml: amortisation: expected a mapping of months, hardware, monthly and overcommit, got 36",
            ),
            (
                "currency: EUR\namortisation:\n  months: 0\n  hardware: {perCore: 1, perGiB: 1}\n  monthly: {perCore: 1, perGiB: 1}\n  overcommit: {cpu: 1, memory: 1}\n".to_owned(),
                "rates.yaml: amortisation.months: expected a whole number >= 1, got 0",
            ),
            (
                "currency: EUR\nflavors: {}\n".to_owned(),
                "rates.yaml: flavors: expected at least one flavor",
            ),
            (
                "currency: EUR\nflavors:\n  m1.large: 0.19\n".to_owned(),
                "rates.yaml: flavors.m1.large: expected a mapping of vcpus, ramGiB and hourly, got 0.19",
            ),
            (
                format!("currency: EUR\nflavors:\n  {valid_flavor}\n  m1.odd: {{vcpus: 0, ramGiB: 0, ram: 8}}\n"),
                "rates.yaml: flavors.m1.odd.ram: unknown field (expected vcpus, ramGiB or hourly); flavors.m1.odd.vcpus: expected a whole number >= 1, got 0; flavors.m1.odd.ramGiB: expected a number > 0, got 0; flavors.m1.odd.hourly: missing",
            ),
            (
                format!("currency: EUR\ncpuCoreHour: 0\nmemoryGiBHour: 0.0\nflavors:\n  {valid_flavor}\n"),
                "rates.yaml: flavors: cannot split a flavor's price between cores and memory in the ratio of rates that are both 0",
            ),
            (
                "- currency: EUR\n".to_owned(),
                "rates.yaml: expected a mapping of currency, egressGiB, cpuCoreHour, memoryGiBHour, amortisation and flavors, got a list",
            ),
            ("".to_owned(), "rates.yaml: empty (expected a rate table)"),
            (
                "currency: EUR\n---\ncurrency: USD\n".to_owned(),
                "rates.yaml: holds 2 YAML documents (a rate table is one)",
            ),
            (
                "currency: EUR\ncurrency: USD\n".to_owned(),
                // yaml-rust2's own words, with its Debug of the key.
                "rates.yaml: not YAML: String(\"currency\"): duplicated key in mapping at byte 24 line 2 column 11",
            ),
        ];
        for (yaml, expected) in cases {
            let error = RateTable::parse_yaml(&yaml, "rates.yaml").expect_err(&yaml);
            assert_eq!(error.to_string(), expected, "{yaml}");
        }
    }

    #[test]
    fn quoting_errors() {
        let table = table(
            "currency: EUR\nflavors:\n  m1.large: {vcpus: 4, ramGiB: 8, hourly: 0.19}\n  m1.small: {vcpus: 1, ramGiB: 2, hourly: 0.05}\n",
        );
        let cases: [(Result<Quote, PricingError>, &str); 4] = [
            (
                table.quote(Some("m1.huge")),
                "rates.yaml: no flavor \"m1.huge\"; it prices m1.large, m1.small",
            ),
            (
                table.quote_mix(&[("m1.huge", 1), ("m1.large", 1), ("x", 2), ("m1.huge", 1)]),
                "rates.yaml: no flavor \"m1.huge\", \"x\"; it prices m1.large, m1.small",
            ),
            (
                table.quote(None),
                "rates.yaml: prices flavors only (m1.large, m1.small); name the workers' flavor",
            ),
            (
                table.quote_mix(&[("m1.large", 0)]),
                "rates.yaml: no workers to weight its flavors by (the counts add up to 0)",
            ),
        ];
        for (got, expected) in cases {
            assert_eq!(got.expect_err(expected).to_string(), expected);
        }
        assert_eq!(
            table.quote_mix(&[]).expect_err("no workers").to_string(),
            "rates.yaml: no workers to weight its flavors by (the counts add up to 0)"
        );
        // Without flavors, no flavor can be wrong and any mix gets the rates.
        let flat = RateTable::parse_yaml(
            "currency: EUR\ncpuCoreHour: 0.02\nmemoryGiBHour: 0.003\n",
            "flat.yaml",
        )
        .expect("valid");
        assert_eq!(
            flat.quote_mix(&[("anything", 0)]).expect("priced"),
            flat.quote(None).expect("priced")
        );
    }

    /// The example of `cloud-apis.md` §9, OpenCost's `configs/default.json`.
    const OPENCOST_DEFAULT: &str = r#"{"provider":"custom","description":"Default prices based on GCP us-central1",
 "CPU":"0.031611","spotCPU":"0.006655","RAM":"0.004237","spotRAM":"0.000892","GPU":"0.95",
 "storage":"0.00005479452","zoneNetworkEgress":"0.01","regionNetworkEgress":"0.01",
 "internetNetworkEgress":"0.12","natGatewayEgress":"0.045","natGatewayIngress":"0.045",
 "firstFiveForwardingRulesCost":"0.0","additionalForwardingRuleCost":"0.0","LBIngressDataCost":"0.0"}"#;

    #[test]
    fn opencost_custom_pricing_is_read_as_hourly() {
        let table =
            RateTable::import_opencost_hourly(OPENCOST_DEFAULT, "default.json").expect("valid");
        assert_eq!(table.currency(), "USD");
        assert_eq!(table.egress_gib(), 0.12);
        assert_eq!(
            table.quote(Some("m1.large")).expect("priced"),
            Quote {
                cpu_core_hour: 0.031611,
                memory_gib_hour: 0.004237,
                currency: "USD".to_owned(),
                source: "rate table default.json (OpenCost custom pricing, hourly)".to_owned(),
                fallback_reason: None,
            }
        );
        let euro = RateTable::import_opencost_hourly(
            r#"{"CPU": 0.02, "RAM": "0.003", "currencyCode": "EUR", "internetNetworkEgress": "", "discount": "0%"}"#,
            "eu.json",
        )
        .expect("valid");
        let quote = euro.quote(None).expect("priced");
        assert_eq!((quote.cpu_core_hour, quote.memory_gib_hour), (0.02, 0.003));
        assert_eq!((euro.currency(), euro.egress_gib()), ("EUR", 0.0));
    }

    #[test]
    fn opencost_error_messages() {
        let cases = [
            (
                r#"{"provider":"aws","CPU":"abc","RAM":"-1","internetNetworkEgress":"NaN"}"#,
                "opencost.json: provider: expected \"custom\" (OpenCost's on-prem pricing), got \"aws\"; CPU: expected a number >= 0, got \"abc\"; RAM: expected a number >= 0, got \"-1\"; internetNetworkEgress: expected a number >= 0, got \"NaN\"",
            ),
            (r#"{"RAM":"0.004","CPU":""}"#, "opencost.json: CPU: missing"),
            (
                r#"{"CPU":"0.03","RAM":"0.004","discount":"30%","negotiatedDiscount":"5","currencyCode":"usd"}"#,
                "opencost.json: discount: expected none (Ferry does not apply OpenCost's discounts: fold them into CPU and RAM), got \"30%\"; negotiatedDiscount: expected none (Ferry does not apply OpenCost's discounts: fold them into CPU and RAM), got \"5\"; currencyCode: expected three capital letters (an ISO 4217 code like USD or EUR), got \"usd\"",
            ),
            (
                r#"[1]"#,
                "opencost.json: expected a JSON object of OpenCost custom pricing, got a list",
            ),
            (
                r#"{"CPU": true, "RAM": null}"#,
                "opencost.json: CPU: expected a number >= 0, got true; RAM: expected a number >= 0, got null",
            ),
            (
                "{\"CPU\": ",
                "opencost.json: not JSON: EOF while parsing a value at line 1 column 8",
            ),
        ];
        for (json, expected) in cases {
            let error = RateTable::import_opencost_hourly(json, "opencost.json").expect_err(json);
            assert_eq!(error.to_string(), expected, "{json}");
        }
    }

    /// `testdata/rates.yaml`: the amortisation above, 241 : 15, and three flavors.
    /// m1.large {4, 8, 0.02}: 0.02 × 241 / 1084 = 4.82 / 1084 and 0.3 / 1084; m1.xlarge
    /// {8, 16, 0.04} is twice it and has the same rates; r1.large {4, 32, 0.03}: 0.03 × 241
    /// / 1444 = 7.23 / 1444 and 0.45 / 1444.
    #[test]
    fn the_sample_table_parses() {
        let table = RateTable::parse_yaml(include_str!("../testdata/rates.yaml"), "rates.yaml")
            .expect("the sample is valid");
        assert_eq!((table.currency(), table.egress_gib()), ("EUR", 0.01));
        let cases = [
            (None, 385.6 / 105120.0, 6.0 / 26280.0),
            (Some("m1.large"), 4.82 / 1084.0, 0.3 / 1084.0),
            (Some("m1.xlarge"), 4.82 / 1084.0, 0.3 / 1084.0),
            (Some("r1.large"), 7.23 / 1444.0, 0.45 / 1444.0),
        ];
        for (flavor, cpu, memory) in cases {
            let quote = table.quote(flavor).expect("priced");
            assert!(
                close(quote.cpu_core_hour, cpu) && close(quote.memory_gib_hour, memory),
                "{flavor:?}: {quote:?}"
            );
            assert_eq!(quote.currency, "EUR");
        }
    }

    #[tokio::test]
    async fn the_price_source_answers_per_cluster() {
        let table = RateTable::parse_yaml(include_str!("../testdata/rates.yaml"), "rates.yaml")
            .expect("the sample is valid");
        let mut prices = RateTablePrices::default();
        prices
            .add("dc1", &table, &Workers::Flavor("m1.large".to_owned()))
            .expect("a listed flavor");
        prices
            .add(
                "dc2",
                &table,
                &Workers::Mix(vec![("m1.large".to_owned(), 3), ("r1.large".to_owned(), 2)]),
            )
            .expect("listed flavors");
        prices
            .add("dc3", &table, &Workers::Unnamed)
            .expect("the table has rates");
        let error = prices
            .add("dc4", &table, &Workers::Flavor("m9.huge".to_owned()))
            .expect_err("not listed");
        assert_eq!(
            error.to_string(),
            "rates.yaml: no flavor \"m9.huge\"; it prices m1.large, m1.xlarge, r1.large"
        );

        assert_eq!(
            prices.quote("dc1").await.expect("added"),
            table.quote(Some("m1.large")).expect("priced")
        );
        assert_eq!(
            prices.quote("dc2").await.expect("added"),
            table
                .quote_mix(&[("m1.large", 3), ("r1.large", 2)])
                .expect("priced")
        );
        assert_eq!(
            prices.quote("dc3").await.expect("added").source,
            "rate table rates.yaml (amortised over 36 months)"
        );
        let missing = prices.quote("dc4").await.expect_err("never added");
        assert_eq!(missing.to_string(), "a rate table not found on cluster dc4");
        assert!(!missing.is_transient());
    }
}
