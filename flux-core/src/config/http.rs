//! `[http]`: the limits a web framework's middleware puts on every request.
//!
//! ```toml
//! [http]
//! rate = "100/minute"      # every request no rule matches (or name = "api")
//!
//! [http.rules]
//! "/login" = "5/minute"    # a rate,
//! "/api/*" = "api"         # the name of a limit under [rate_limits],
//! "/health" = false        # or false: not limited
//! ```
//!
//! Nothing in the core applies these: Flux's framework middlewares (in
//! Python, `flux.asgi`, `flux.flask` and `flux.django`) read them. They are
//! part of the schema so that one file, checked once, configures every
//! language, and a rule naming an unknown limit or a bad rate fails at load
//! time with its line.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::written::Written;
use super::{rates_by_text, ConfigError};
use crate::{parse_rates, Limit, LimitSpec, Rate};

/// `[http]`, resolved against the file's limits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpConfig {
    /// The limit of every request no rule matches; `None`: those requests
    /// are not limited.
    pub limit: Option<RouteLimit>,
    /// Path patterns and the limit of the requests each matches: a pattern
    /// without `*` matches that path only; one ending in `*` matches every
    /// path that starts with what comes before it. An exact pattern wins
    /// over prefixes, and a longer prefix over a shorter one.
    pub rules: BTreeMap<String, RouteLimit>,
}

/// The limit a rule (or `[http]` itself) puts on requests.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteLimit {
    /// The limit `[rate_limits.NAME]`, shared with everything else that names it.
    Named(String),
    /// Rates of its own, with the rest of `[rate_limit]`.
    Rates(Vec<Rate>),
    /// Not limited (written `false`).
    Exempt,
}

/// `[http]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpTable {
    #[serde(default, deserialize_with = "rates_by_text")]
    rate: Option<Vec<Rate>>,
    name: Option<String>,
    #[serde(default)]
    rules: BTreeMap<String, RuleValue>,
}

/// A rule's value as written: a rate or a limit's name, or `false`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RuleValue {
    Text(String),
    Flag(bool),
}

/// Checks `[http]` against the limits of the file and resolves it.
pub(super) fn resolve(
    written: &dyn Written,
    table: HttpTable,
    rate_limit: &Limit,
    rate_limits: &BTreeMap<String, Limit>,
) -> Result<HttpConfig, ConfigError> {
    let defined = || {
        if rate_limits.is_empty() {
            "no limit is defined under [rate_limits]".to_owned()
        } else {
            let names: Vec<_> = rate_limits.keys().map(|n| format!("{n:?}")).collect();
            format!("defined: {}", names.join(", "))
        }
    };
    let over_default = |path: &[&str], rates: Vec<Rate>| {
        let spec = LimitSpec {
            rate: Some(rates.clone()),
            ..LimitSpec::default()
        };
        match spec.over(rate_limit).and_then(|limit| limit.quotas()) {
            Ok(_) => Ok(RouteLimit::Rates(rates)),
            Err(e) => Err(written.error(path, e.to_string())),
        }
    };
    let limit = match (table.rate, table.name) {
        (Some(_), Some(_)) => {
            return Err(written.error(
                &["http", "name"],
                "set either rate or name, not both".to_owned(),
            ))
        }
        (Some(rates), None) => Some(over_default(&["http", "rate"], rates)?),
        (None, Some(name)) if rate_limits.contains_key(&name) => Some(RouteLimit::Named(name)),
        (None, Some(name)) => {
            return Err(written.error(
                &["http", "name"],
                format!("no limit named {name:?}; {}", defined()),
            ))
        }
        (None, None) => None,
    };
    let mut rules = BTreeMap::new();
    for (pattern, value) in table.rules {
        let path = ["http", "rules", pattern.as_str()];
        if let Err(problem) = check_pattern(&pattern) {
            return Err(written.error(&path, problem));
        }
        let limit = match value {
            RuleValue::Flag(false) => RouteLimit::Exempt,
            RuleValue::Text(name) if rate_limits.contains_key(&name) => RouteLimit::Named(name),
            RuleValue::Text(text) => match parse_rates(&text) {
                Ok(rates) => over_default(&path, rates)?,
                Err(e) => {
                    return Err(written.error(
                        &path,
                        format!(
                            "{text:?} is neither a limit under [rate_limits] ({}) nor a rate: {e}",
                            defined()
                        ),
                    ))
                }
            },
            RuleValue::Flag(true) => {
                return Err(written.error(&path, format!("must be {RULE_VALUE}, got true")))
            }
        };
        rules.insert(pattern, limit);
    }
    Ok(HttpConfig { limit, rules })
}

/// What a rule's value may be, in the words of an error message.
pub(super) const RULE_VALUE: &str =
    "a rate (\"5/minute\"), the name of a limit under [rate_limits], or false (not limited)";

/// A path pattern: `/login`, or a prefix ending in `*`, as in `/api/*`.
fn check_pattern(pattern: &str) -> Result<(), String> {
    let star = pattern.find('*');
    if pattern.starts_with('/') && star.is_none_or(|at| at == pattern.len() - 1) {
        return Ok(());
    }
    Err(format!(
        "is not a path pattern: a rule's pattern is a path (\"/login\") or a path prefix \
         ending in * (\"/api/*\"), starting with / and with no other *; got {pattern:?}"
    ))
}

/// `[http]` as [`super::Config`]'s serialization shows it: `rate` (as
/// text) or `name`, and `rules` of rates as text, names, and `false`.
impl Serialize for HttpConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match &self.limit {
            Some(RouteLimit::Named(name)) => map.serialize_entry("name", name)?,
            Some(RouteLimit::Rates(rates)) => map.serialize_entry("rate", &rates_text(rates))?,
            Some(RouteLimit::Exempt) | None => {}
        }
        let rules: BTreeMap<&str, RuleView<'_>> = self
            .rules
            .iter()
            .map(|(pattern, limit)| (pattern.as_str(), RuleView(limit)))
            .collect();
        map.serialize_entry("rules", &rules)?;
        map.end()
    }
}

struct RuleView<'a>(&'a RouteLimit);

impl Serialize for RuleView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            RouteLimit::Named(name) => serializer.serialize_str(name),
            RouteLimit::Rates(rates) => serializer.serialize_str(&rates_text(rates)),
            RouteLimit::Exempt => serializer.serialize_bool(false),
        }
    }
}

fn rates_text(rates: &[Rate]) -> String {
    let texts: Vec<String> = rates.iter().map(Rate::to_string).collect();
    texts.join(";")
}
