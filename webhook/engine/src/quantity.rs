//! Kubernetes resource quantities (`100m`, `128Mi`, `1.5`, `1e3`): a syntax
//! check, so bad defaults or annotations fail with a clear message instead
//! of a pod the apiserver rejects later, and an exact comparison, so the
//! injector never writes a request above its limit.

use std::cmp::Ordering;
use std::sync::OnceLock;

use regex::Regex;

fn quantity_regex() -> &'static Regex {
    static QUANTITY: OnceLock<Regex> = OnceLock::new();
    QUANTITY.get_or_init(|| {
        Regex::new(r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$")
            .expect("static regex")
    })
}

pub fn is_valid_quantity(text: &str) -> bool {
    quantity_regex().is_match(text)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a resource quantity")]
pub struct QuantityError(pub String);

/// A quantity's value in nano-units (`1` is 10^9, `1m` is 10^6), rounded up
/// like the apiserver rounds below its nano precision; values beyond u128
/// saturate (no real request or limit comes near that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(u128);

impl Quantity {
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        if !is_valid_quantity(text) {
            return Err(QuantityError(text.to_string()));
        }
        let body = text.strip_prefix('+').unwrap_or(text);
        let split = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, suffix) = body.split_at(split);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        // value = digits * 10^exp10 * 2^exp2, digits without the decimal point.
        let digits = format!("{int}{frac}");
        let mut exp10: i64 = -(frac.len() as i64);
        let mut exp2: u32 = 0;
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            exponent => {
                // The regex admits only [eE][+-]?\d+ here.
                let e: i64 = exponent[1..].parse().unwrap_or(i64::MAX);
                exp10 = exp10.saturating_add(e);
            }
        }
        // Into nano-units.
        exp10 = exp10.saturating_add(9);
        let digits = digits.trim_start_matches('0');
        let mut value: u128 = 0;
        let mut saturated = false;
        for d in digits.bytes() {
            match value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(d - b'0')))
            {
                Some(v) => value = v,
                None => {
                    saturated = true;
                    break;
                }
            }
        }
        if saturated {
            return Ok(Self(u128::MAX));
        }
        if value == 0 {
            return Ok(Self(0));
        }
        let shifted = value.checked_shl(exp2).filter(|v| v >> exp2 == value);
        let Some(mut value) = shifted else {
            return Ok(Self(u128::MAX));
        };
        if exp10 >= 0 {
            for _ in 0..exp10.min(40) {
                value = value.saturating_mul(10);
            }
            if exp10 > 40 {
                value = u128::MAX;
            }
        } else {
            let mut remainder = false;
            for _ in 0..(-exp10).min(40) {
                remainder |= value % 10 != 0;
                value /= 10;
            }
            if -exp10 > 40 {
                remainder = true;
                value = 0;
            }
            if remainder {
                value += 1;
            }
        }
        Ok(Self(value))
    }

    /// Compares two quantity strings; `None` when either does not parse.
    pub fn compare(a: &str, b: &str) -> Option<Ordering> {
        Some(Self::parse(a).ok()?.cmp(&Self::parse(b).ok()?))
    }

    /// The value in nano-units.
    pub fn nanos(self) -> u128 {
        self.0
    }

    pub fn from_nanos(nanos: u128) -> Self {
        Self(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubernetes_quantities() {
        for q in ["100m", "1", "0.5", "128Mi", "1Gi", "2e3", "1.5G", ".5"] {
            assert!(is_valid_quantity(q), "{q}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for q in ["", "abc", "1 Gi", "1GB", "-1", "1..2", "Mi"] {
            assert!(!is_valid_quantity(q), "{q}");
            assert!(Quantity::parse(q).is_err(), "{q}");
        }
    }

    #[test]
    fn equal_values_in_different_notations_compare_equal() {
        for (a, b) in [
            ("100m", "0.1"),
            ("1", "1000m"),
            ("1Ki", "1024"),
            ("1Gi", "1073741824"),
            ("1e3", "1k"),
            ("1.5G", "1500M"),
            ("+2", "2"),
            ("0.5Gi", "512Mi"),
            ("1n", "0.000000001"),
            ("0", "0Mi"),
        ] {
            assert_eq!(Quantity::compare(a, b), Some(Ordering::Equal), "{a} vs {b}");
        }
    }

    #[test]
    fn orders_by_value_not_by_text() {
        for (small, big) in [
            ("10m", "2"),
            ("999Mi", "1Gi"),
            ("1G", "1Gi"),
            ("512Mi", "1G"),
            ("1u", "1m"),
            ("1e-3", "2m"),
            ("32Mi", "33554433"),
        ] {
            assert_eq!(
                Quantity::compare(small, big),
                Some(Ordering::Less),
                "{small} < {big}"
            );
        }
    }

    #[test]
    fn values_below_nano_precision_round_up_and_huge_values_saturate() {
        assert_eq!(Quantity::parse("0.1n").unwrap(), Quantity::from_nanos(1));
        assert_eq!(
            Quantity::parse("99999999999999999999999999999999999999999E").unwrap(),
            Quantity::from_nanos(u128::MAX)
        );
        assert_eq!(
            Quantity::parse("1e400").unwrap(),
            Quantity::from_nanos(u128::MAX)
        );
    }
}
