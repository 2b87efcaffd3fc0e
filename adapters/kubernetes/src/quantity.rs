//! Kubernetes resource quantities (`500m`, `1.5`, `256Mi`, `1e9`) read as integers.
//!
//! The arithmetic is exact (integers, no floats) and rounds up like the API server's
//! `MilliValue()`/`Value()`: a request of `0.1m` cpu still occupies one milli-core on a node,
//! so rounding down would make a cluster look roomier than it is.

use std::fmt;

/// Why a quantity could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantityError {
    pub text: String,
    pub reason: &'static str,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "quantity {:?}: {}", self.text, self.reason)
    }
}

impl std::error::Error for QuantityError {}

/// Cpu in milli-cores: `500m` → 500, `2` → 2000, `1.5` → 1500.
pub fn cpu_millis(text: &str) -> Result<u64, QuantityError> {
    scaled(text, 3)
}

/// Memory in bytes: `256Mi`, `1Gi`, `1000M`, `1e9`, `134217728`.
pub fn memory_bytes(text: &str) -> Result<u64, QuantityError> {
    scaled(text, 0)
}

/// The quantity times `10^target_exp10`, rounded up.
fn scaled(text: &str, target_exp10: i32) -> Result<u64, QuantityError> {
    let error = |reason: &'static str| QuantityError {
        text: text.to_owned(),
        reason,
    };
    let body = text.trim();
    let body = body.strip_prefix('+').unwrap_or(body);
    if body.starts_with('-') {
        return Err(error("negative quantities are not resources"));
    }
    let mantissa_len = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (mantissa, suffix) = body.split_at(mantissa_len);
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(error("no digits"));
    }
    if fraction.contains('.') {
        return Err(error("more than one decimal point"));
    }
    let digits: String = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    // 38 decimal digits always fit in a u128.
    if digits.len() > 38 {
        return Err(error("too many digits"));
    }
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| error("bad digits"))?
    };
    let (binary_power, exp10) = match suffix {
        "" => (0, 0),
        "Ki" => (1, 0),
        "Mi" => (2, 0),
        "Gi" => (3, 0),
        "Ti" => (4, 0),
        "Pi" => (5, 0),
        "Ei" => (6, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        other => {
            let exponent = other
                .strip_prefix(['e', 'E'])
                .ok_or_else(|| error("unknown suffix"))?;
            let value: i32 = exponent.parse().map_err(|_| error("bad exponent"))?;
            if value.abs() > 100 {
                return Err(error("exponent out of range"));
            }
            (0, value)
        }
    };
    let too_large = || error("too large");
    let fraction_len = i32::try_from(fraction.len()).map_err(|_| too_large())?;
    let mut value = mantissa
        .checked_mul(1024u128.pow(binary_power))
        .ok_or_else(too_large)?;
    let exp10 = exp10 + target_exp10 - fraction_len;
    if value == 0 {
        return Ok(0);
    }
    if exp10 >= 0 {
        let factor = 10u128
            .checked_pow(u32::try_from(exp10).map_err(|_| too_large())?)
            .ok_or_else(too_large)?;
        value = value.checked_mul(factor).ok_or_else(too_large)?;
    } else {
        match 10u128.checked_pow(exp10.unsigned_abs()) {
            Some(divisor) => value = value.div_ceil(divisor),
            // Smaller than any unit, but not nothing.
            None => value = 1,
        }
    }
    u64::try_from(value).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        let cases: &[(&str, u64)] = &[
            ("500m", 500),
            ("2", 2000),
            ("1.5", 1500),
            ("0.25", 250),
            (".5", 500),
            ("100", 100_000),
            ("0", 0),
            ("0m", 0),
            ("1m", 1),
            ("0.1m", 1),
            ("250000u", 250),
            ("1000000n", 1),
            ("1n", 1),
            ("1k", 1_000_000),
            ("2e-3", 2),
            ("+1", 1000),
            (" 3 ", 3000),
        ];
        for &(text, want) in cases {
            assert_eq!(cpu_millis(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn memory_quantities() {
        let cases: &[(&str, u64)] = &[
            ("256Mi", 256 << 20),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("1000M", 1_000_000_000),
            ("1G", 1_000_000_000),
            ("1e9", 1_000_000_000),
            ("1E9", 1_000_000_000),
            ("1e+3", 1000),
            ("134217728", 134_217_728),
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("123Ki", 125_952),
            ("16Gi", 16 << 30),
            ("1Ti", 1 << 40),
            ("1Ei", 1 << 60),
            ("8E", 8_000_000_000_000_000_000),
            ("1500m", 2),
            ("0", 0),
            ("0.5Ki", 512),
        ];
        for &(text, want) in cases {
            assert_eq!(memory_bytes(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn malformed_quantities_are_errors() {
        for text in [
            "",
            "m",
            "Mi",
            "-1",
            "-500m",
            "1.2.3",
            "1Zi",
            "1 Gi",
            "1e",
            "1e1000",
            "abc",
            "1x",
            "16Ei",
            "99999999999999999999999999999999999999999",
        ] {
            assert!(memory_bytes(text).is_err(), "{text}");
        }
        for text in ["", "-1", "1..5", "1mm", "1E30"] {
            assert!(cpu_millis(text).is_err(), "{text}");
        }
        let error = cpu_millis("-1").expect_err("negative");
        assert!(error.to_string().contains("negative"), "{error}");
    }
}
