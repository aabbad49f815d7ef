//! Limits written as text: `"10/second"`, `"100 per minute"`, `"5/30s"`,
//! `"1000/day"`, several joined by `;` (`"10/second;1000/day"`).
//!
//! Parsed here, once, so flux.toml, the C ABI, Rust and Python accept the same
//! strings and refuse the same ones with the same message.
//!
//! A rate is a whole number of calls, `/` or `per`, and a period: a unit
//! (`second`, `minute`, `hour`, `day`, `week`, their plurals, or `s`, `m`,
//! `h`, `d`, `w`), optionally after a number (`30s`, `2 hours`, `0.5 second`).
//! Case and spaces around the parts do not matter. Months and years are not
//! accepted: they have no fixed length, and a limit must.

use std::fmt;

use thiserror::Error;

use crate::quota::MAX_EXACT;

/// The most quotas one limit may combine.
pub const MAX_QUOTAS: usize = 8;

/// One rate: `requests` calls per `period_us` microseconds, exactly as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub requests: u64,
    pub period_us: u64,
}

/// The units a period may be written in, with their length in microseconds.
const UNITS: [(&[&str], u64); 5] = [
    (&["second", "seconds", "sec", "secs", "s"], 1_000_000),
    (&["minute", "minutes", "min", "mins", "m"], 60_000_000),
    (&["hour", "hours", "hr", "hrs", "h"], 3_600_000_000),
    (&["day", "days", "d"], 86_400_000_000),
    (&["week", "weeks", "w"], 604_800_000_000),
];

/// What every rate error ends with: the forms that are accepted.
const FORMS: &str = "a rate reads N/unit, N per unit or N/<number><unit>, as in \"10/second\", \
                     \"100 per minute\", \"5/30s\" or \"1000/day\", several joined by \";\" \
                     (units: second, minute, hour, day, week, or s, m, h, d, w)";

/// A rate string that cannot be used: the string, the part at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid rate {text:?}: {problem}; {FORMS}")]
pub struct RateError {
    /// The whole string as given.
    pub text: String,
    /// What is wrong, naming the part at fault.
    pub problem: String,
}

impl Rate {
    pub fn new(requests: u64, period_us: u64) -> Self {
        Rate {
            requests,
            period_us,
        }
    }

    /// The period in seconds, as a quota takes it.
    pub fn period_secs(&self) -> f64 {
        self.period_us as f64 / 1e6
    }

    /// A short name that tells rates apart: `10per1`, `5per30`, `2per0.5`
    /// (requests per period in seconds, exact). Used in storage keys and as
    /// the name of a quota in `RateLimit-Policy` headers.
    pub fn label(&self) -> String {
        format!("{}per{}", self.requests, Seconds(self.period_us))
    }
}

/// `10/1s`, `5/0.5s`: what [`parse_rates`] reads back as the same rate.
impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.requests, Seconds(self.period_us))
    }
}

/// Microseconds shown as seconds with no trailing zeros: 1500000 -> `1.5`.
pub(crate) struct Seconds(pub(crate) u64);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, micros) = (self.0 / 1_000_000, self.0 % 1_000_000);
        if micros == 0 {
            return write!(f, "{whole}");
        }
        let fraction = format!("{micros:06}");
        write!(f, "{whole}.{}", fraction.trim_end_matches('0'))
    }
}

impl std::str::FromStr for Rate {
    type Err = RateError;

    /// One rate, without `;`.
    fn from_str(text: &str) -> Result<Rate, RateError> {
        parse_one(text).map_err(|problem| RateError {
            text: text.to_owned(),
            problem,
        })
    }
}

/// Parses one or more rates joined by `;`. Each rate must differ from the
/// others, and at most [`MAX_QUOTAS`] may be given.
///
/// ```
/// use flux_core::{parse_rates, Rate};
/// let rates = parse_rates("10/second; 1000 per day").unwrap();
/// assert_eq!(rates, [Rate::new(10, 1_000_000), Rate::new(1000, 86_400_000_000)]);
/// assert_eq!(rates[1].label(), "1000per86400");
/// let error = parse_rates("10/fortnight").unwrap_err();
/// assert!(error.to_string().contains("unknown unit \"fortnight\""));
/// ```
pub fn parse_rates(text: &str) -> Result<Vec<Rate>, RateError> {
    let fail = |problem: String| RateError {
        text: text.to_owned(),
        problem,
    };
    let mut rates: Vec<Rate> = Vec::new();
    for part in text.split(';') {
        if part.trim().is_empty() {
            return Err(fail(if text.trim().is_empty() {
                "it is empty".to_owned()
            } else {
                "an empty rate between two \";\"".to_owned()
            }));
        }
        let rate = parse_one(part).map_err(&fail)?;
        if rates.contains(&rate) {
            return Err(fail(format!("{:?} is given twice", part.trim())));
        }
        rates.push(rate);
    }
    if rates.len() > MAX_QUOTAS {
        return Err(fail(format!(
            "{} rates, at most {MAX_QUOTAS} may be combined",
            rates.len()
        )));
    }
    Ok(rates)
}

/// One rate; the error is the problem, naming the part at fault.
fn parse_one(text: &str) -> Result<Rate, String> {
    let text = text.trim();
    let (count, period) = match text.split_once('/') {
        Some(parts) => parts,
        None => split_per(text).ok_or_else(|| {
            format!("{text:?} has no \"/\" or \"per\" between the count and the period")
        })?,
    };
    let count = count.trim();
    let requests: u64 = match count.parse() {
        Ok(0) => return Err(format!("the count must be at least 1, got {count:?}")),
        Ok(n) if n <= MAX_EXACT => n,
        Ok(_) => return Err(format!("the count {count:?} is too large")),
        Err(_) => {
            return Err(format!(
                "the count must be a whole number of calls, got {count:?}"
            ))
        }
    };
    let period_us = period_us(period.trim())?;
    Ok(Rate {
        requests,
        period_us,
    })
}

/// `"100 per minute"` -> `("100", "minute")`: `per` as a word of its own.
fn split_per(text: &str) -> Option<(&str, &str)> {
    let lower = text.to_ascii_lowercase();
    let at = lower.match_indices("per").map(|(at, _)| at).find(|&at| {
        let before = lower[..at].chars().next_back();
        let after = lower[at + 3..].chars().next();
        before.is_some_and(char::is_whitespace) && after.is_some_and(char::is_whitespace)
    })?;
    Some((&text[..at], &text[at + 3..]))
}

/// `"second"`, `"30s"`, `"2 hours"`, `"0.5 second"` in microseconds.
fn period_us(period: &str) -> Result<u64, String> {
    if period.is_empty() {
        return Err("the period is missing after \"/\"".to_owned());
    }
    let split = period
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(period.len());
    let (number, unit) = (period[..split].trim(), period[split..].trim());
    let unit_lower = unit.to_ascii_lowercase();
    let Some(&(_, unit_us)) = UNITS
        .iter()
        .find(|(names, _)| names.contains(&&*unit_lower))
    else {
        return Err(match unit_lower.as_str() {
            "" => format!("the period {period:?} has no unit"),
            "month" | "months" | "mo" | "year" | "years" | "y" => format!(
                "{unit:?} has no fixed length; write it in days (\"30 days\", \"365 days\")"
            ),
            _ => format!("unknown unit {unit:?}"),
        });
    };
    if number.is_empty() {
        return Ok(unit_us);
    }
    let times: f64 = number
        .parse()
        .map_err(|_| format!("{number:?} in {period:?} is not a number"))?;
    let us = (times * unit_us as f64).round();
    if us < 1.0 {
        return Err(format!(
            "the period {period:?} must be at least one microsecond"
        ));
    }
    if us > MAX_EXACT as f64 {
        return Err(format!("the period {period:?} is too long"));
    }
    Ok(us as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Rate {
        let rates = parse_rates(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(rates.len(), 1, "{text}");
        rates[0]
    }

    #[test]
    fn the_documented_forms() {
        assert_eq!(one("10/second"), Rate::new(10, 1_000_000));
        assert_eq!(one("100 per minute"), Rate::new(100, 60_000_000));
        assert_eq!(one("5/30s"), Rate::new(5, 30_000_000));
        assert_eq!(one("1000/day"), Rate::new(1000, 86_400_000_000));
        assert_eq!(one(" 3 / 2 Hours "), Rate::new(3, 7_200_000_000));
        assert_eq!(one("2/0.5s"), Rate::new(2, 500_000));
        assert_eq!(one("1 PER week"), Rate::new(1, 604_800_000_000));
        assert_eq!(one("7/1.5 min"), Rate::new(7, 90_000_000));
    }

    #[test]
    fn several_joined_by_semicolons() {
        let rates = parse_rates("10/second;1000/day").unwrap();
        assert_eq!(
            rates,
            [Rate::new(10, 1_000_000), Rate::new(1000, 86_400_000_000)]
        );
    }

    #[test]
    fn labels_and_display_are_exact() {
        assert_eq!(Rate::new(10, 1_000_000).label(), "10per1");
        assert_eq!(Rate::new(2, 500_000).label(), "2per0.5");
        assert_eq!(Rate::new(2, 1_000_001).label(), "2per1.000001");
        assert_eq!(Rate::new(5, 30_000_000).to_string(), "5/30s");
        let rate = Rate::new(3, 1_250_000);
        assert_eq!(one(&rate.to_string()), rate);
    }

    #[test]
    fn the_edges_of_what_is_accepted() {
        // As many rates as a limit may combine.
        let eight: Vec<String> = (1..=8).map(|n| format!("{n}/second")).collect();
        assert_eq!(parse_rates(&eight.join(";")).unwrap().len(), MAX_QUOTAS);
        // The shortest period, and one past the longest.
        assert_eq!(one("1/0.000001s"), Rate::new(1, 1));
        let message = parse_rates("1/9007199255s").unwrap_err().to_string();
        assert!(
            message.contains("the period \"9007199255s\" is too long"),
            "{message}"
        );
        // "per" is a word of its own.
        for text in ["10 perminute", "10per minute"] {
            let message = parse_rates(text).unwrap_err().to_string();
            assert!(
                message.contains("has no \"/\" or \"per\""),
                "{text}: {message}"
            );
        }
    }

    #[test]
    fn errors_name_the_part_and_show_the_forms() {
        let cases = [
            ("10/fortnight", "unknown unit \"fortnight\""),
            (
                "ten/second",
                "the count must be a whole number of calls, got \"ten\"",
            ),
            ("0/second", "the count must be at least 1"),
            ("10 seconds", "has no \"/\" or \"per\""),
            ("10/", "the period is missing"),
            ("10/30", "the period \"30\" has no unit"),
            ("10/month", "no fixed length"),
            ("10/0s", "at least one microsecond"),
            ("10/1.2.3s", "is not a number"),
            ("10/second;;5/day", "an empty rate between two \";\""),
            ("", "it is empty"),
            ("10/s;10/second", "\"10/second\" is given twice"),
            ("1.5/second", "whole number"),
        ];
        for (text, expected) in cases {
            let message = parse_rates(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text}: {message}");
            assert!(message.contains("\"100 per minute\""), "{text}: {message}");
        }
        let nine: Vec<String> = (1..=9).map(|n| format!("{n}/second")).collect();
        let message = parse_rates(&nine.join(";")).unwrap_err().to_string();
        assert!(message.contains("at most 8"), "{message}");
    }
}
