//! `[http]`: the limits of web-framework middlewares, checked at load time.

use std::path::Path;

use flux_core::config::{Config, ConfigError, HttpConfig, RouteLimit};
use flux_core::Rate;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Some(Path::new("flux.toml")))
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("expected an error, loaded {:?}", config.http),
        Err(e) => e.to_string(),
    }
}

const LIMITS: &str = "[rate_limits.api]\nrate = \"100/minute\"\n";

#[test]
fn rules_are_rates_names_or_false() {
    let config = parse(&format!(
        r#"{LIMITS}
[http]
rate = "1000/hour"

[http.rules]
"/login" = "5 per minute"
"/api/*" = "api"
"/health" = false
"/search" = "10/second;100/minute"
"#
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let http = &config.http;
    assert_eq!(
        http.limit,
        Some(RouteLimit::Rates(vec![Rate::new(1000, 3_600_000_000)]))
    );
    assert_eq!(
        http.rules["/login"],
        RouteLimit::Rates(vec![Rate::new(5, 60_000_000)])
    );
    assert_eq!(http.rules["/api/*"], RouteLimit::Named("api".into()));
    assert_eq!(http.rules["/health"], RouteLimit::Exempt);
    assert_eq!(
        http.rules["/search"],
        RouteLimit::Rates(vec![Rate::new(10, 1_000_000), Rate::new(100, 60_000_000)])
    );
}

#[test]
fn no_http_section_limits_nothing() {
    let config = parse(LIMITS).unwrap();
    assert_eq!(config.http, HttpConfig::default());
    let by_name = parse(&format!("{LIMITS}[http]\nname = \"api\"\n")).unwrap();
    assert_eq!(by_name.http.limit, Some(RouteLimit::Named("api".into())));
}

#[test]
fn a_name_defined_under_rate_limits_is_a_name_even_when_it_reads_as_a_rate() {
    let config = parse(
        "[rate_limits.\"5/minute\"]\nrate = \"1/minute\"\n[http.rules]\n\"/a\" = \"5/minute\"\n",
    )
    .unwrap();
    assert_eq!(
        config.http.rules["/a"],
        RouteLimit::Named("5/minute".into())
    );
}

#[test]
fn bad_rules_name_their_line_and_what_is_allowed() {
    assert_eq!(
        error(&format!("{LIMITS}[http.rules]\n\"/api/*\" = \"apii\"\n")),
        "flux.toml:4: http.rules.\"/api/*\": \"apii\" is neither a limit under [rate_limits] \
         (defined: \"api\") nor a rate: invalid rate \"apii\": \"apii\" has no \"/\" or \"per\" between the \
         count and the period; a rate reads N/unit, N per unit or N/<number><unit>, as in \"10/second\", \"100 per minute\", \
         \"5/30s\" or \"1000/day\", several joined by \";\" (units: second, minute, hour, day, \
         week, or s, m, h, d, w)"
    );
    assert_eq!(
        error("[http.rules]\n\"api/*\" = \"5/minute\"\n"),
        "flux.toml:2: http.rules.\"api/*\": is not a path pattern: a rule's pattern is a path \
         (\"/login\") or a path prefix ending in * (\"/api/*\"), starting with / and with no \
         other *; got \"api/*\""
    );
    assert!(error("[http.rules]\n\"/a/*/b\" = \"5/minute\"\n").contains("is not a path pattern"));
    assert_eq!(
        error("[http.rules]\n\"/a\" = true\n"),
        "flux.toml:2: http.rules.\"/a\": must be a rate (\"5/minute\"), the name of a limit \
         under [rate_limits], or false (not limited), got true"
    );
    assert_eq!(
        error("[http.rules]\n\"/a\" = 5\n"),
        "flux.toml:2: http.rules.\"/a\": must be a rate (\"5/minute\"), the name of a limit \
         under [rate_limits], or false (not limited), got 5"
    );
    assert_eq!(
        error("[http]\nname = \"nope\"\n"),
        "flux.toml:2: http.name: no limit named \"nope\"; no limit is defined under [rate_limits]"
    );
    assert_eq!(
        error(&format!(
            "{LIMITS}[http]\nname = \"api\"\nrate = \"1/second\"\n"
        )),
        "flux.toml:4: http.name: set either rate or name, not both"
    );
    assert!(error("[http]\nrate = \"10/fortnight\"\n")
        .starts_with("flux.toml:2: http.rate: invalid rate"));
    assert_eq!(
        error("[http]\nlimit = \"1/second\"\n"),
        "flux.toml:2: http.limit: unknown key; [http] allows rate, name, rules"
    );
}

#[test]
fn a_rule_is_checked_as_the_limit_it_makes() {
    let message = error("[http.rules]\n\"/a\" = \"9007199254740991/day\"\n");
    assert!(
        message.starts_with("flux.toml:2: http.rules.\"/a\": this gcra quota is too large"),
        "{message}"
    );
}

#[test]
fn json_carries_the_same_rules_and_serializes_them_back() {
    let text = r#"{
        "rate_limits": {"api": {"rate": "100/minute"}},
        "http": {"rate": "1000/hour", "rules": {"/login": "5/minute", "/api/*": "api", "/health": false}}
    }"#;
    let config = Config::from_json_str(text, Some(Path::new("FluxConfig"))).unwrap();
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(
        json["http"],
        serde_json::json!({
            "rate": "1000/3600s",
            "rules": {"/login": "5/60s", "/api/*": "api", "/health": false}
        })
    );
    let again =
        serde_json::json!({"rate_limits": {"api": {"rate": "100/minute"}}, "http": json["http"]});
    let again = Config::from_json_str(&again.to_string(), None).unwrap();
    assert_eq!(again.http, config.http);
    let bad = Config::from_json_str(
        r#"{"http": {"rules": {"/a": "nope"}}}"#,
        Some(Path::new("FluxConfig")),
    )
    .unwrap_err()
    .to_string();
    assert!(
        bad.starts_with("FluxConfig: http.rules.\"/a\": \"nope\" is neither"),
        "{bad}"
    );
}
