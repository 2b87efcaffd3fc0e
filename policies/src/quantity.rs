//! Kubernetes quantities (`500m`, `1.5`, `4Gi`, `1G`) and the small value types built on
//! them. Arithmetic is in integers (millicores and bytes) so that sums are exact.

use std::fmt;

/// Requests or capacity: cpu in millicores, memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Resources {
    /// Thousandths of a core.
    pub cpu_millis: u64,
    /// Bytes.
    pub memory_bytes: u64,
}

/// Bytes in one GiB, the unit prices are quoted in.
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

impl Resources {
    /// Builds a value from millicores and bytes.
    pub const fn new(cpu_millis: u64, memory_bytes: u64) -> Resources {
        Resources {
            cpu_millis,
            memory_bytes,
        }
    }

    /// `self * n`, saturating: a request can never overflow into something small.
    pub fn times(self, n: u64) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_mul(n),
            memory_bytes: self.memory_bytes.saturating_mul(n),
        }
    }

    /// Cores as a float, for prices.
    pub fn cores(self) -> f64 {
        self.cpu_millis as f64 / 1000.0
    }

    /// GiB as a float, for prices.
    pub fn gib(self) -> f64 {
        self.memory_bytes as f64 / GIB
    }
}

/// A cpu amount for people: `500m`, `2`, `1.5`.
pub struct Cpu(pub u64);

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0;
        if millis.is_multiple_of(1000) {
            write!(f, "{}", millis / 1000)
        } else if millis < 1000 {
            write!(f, "{millis}m")
        } else {
            let text = format!("{:.3}", millis as f64 / 1000.0);
            write!(f, "{}", text.trim_end_matches('0'))
        }
    }
}

/// A memory amount for people, in the largest binary unit that keeps it readable.
pub struct Memory(pub u64);

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("Ti", 1 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ];
        for (suffix, size) in UNITS {
            if self.0 >= size {
                if self.0.is_multiple_of(size) {
                    return write!(f, "{}{suffix}", self.0 / size);
                }
                let text = format!("{:.1}", self.0 as f64 / size as f64);
                return write!(f, "{text}{suffix}");
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Parses a Kubernetes cpu quantity into millicores. Sub-millicore precision is
/// refused rather than rounded, as the apiserver does.
pub fn parse_cpu(text: &str) -> Result<u64, String> {
    let (number, scale) = match text.strip_suffix('m') {
        Some(number) => (number, 1u64),
        None => (text, 1000u64),
    };
    let value = parse_decimal(number, scale)
        .ok_or_else(|| format!("`{text}` is not a cpu quantity (like 500m, 2 or 1.5)"))?;
    Ok(value)
}

/// Parses a Kubernetes memory quantity into bytes: `512Mi`, `4Gi`, `1G`, `1e9`, `1024`.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    const SUFFIXES: [(&str, u64); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    let error = || format!("`{text}` is not a memory quantity (like 512Mi, 4Gi, 1G or bytes)");
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((text, 1));
    if scale == 1
        && let Some((mantissa, exponent)) = number.split_once(['e', 'E'])
    {
        let exponent: u32 = exponent
            .parse()
            .ok()
            .filter(|e| *e <= 18)
            .ok_or_else(error)?;
        return parse_decimal(mantissa, 10u64.pow(exponent)).ok_or_else(error);
    }
    parse_decimal(number, scale).ok_or_else(error)
}

/// `number * scale` for a non-negative decimal such as `1.5`, exactly, or None when it
/// is malformed, overflows or has more precision than the scale can hold.
fn parse_decimal(number: &str, scale: u64) -> Option<u64> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits_only(whole) || !digits_only(fraction) {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 18 {
        return None;
    }
    let numerator: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let denominator = 10u128.pow(fraction.len() as u32);
    let scaled = numerator * u128::from(scale);
    if !scaled.is_multiple_of(denominator) {
        // More precision than the unit can hold.
        return None;
    }
    let part = u64::try_from(scaled / denominator).ok()?;
    whole.checked_mul(scale)?.checked_add(part)
}

/// Parses a duration such as `90s`, `30m`, `1h`, `1h30m` or `2d` into seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let error = || format!("`{text}` is not a duration (like 90s, 30m, 1h or 1h30m)");
    if text.is_empty() {
        return Err(error());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(error()),
        };
        let amount: u64 = digits.parse().map_err(|_| error())?;
        total = amount
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(error)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(error());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        let cases = [
            ("500m", Some(500)),
            ("2", Some(2000)),
            ("1.5", Some(1500)),
            ("0.25", Some(250)),
            ("1.0005", None),
            ("1.2500", Some(1250)),
            ("", None),
            ("-1", None),
            ("1.5m", None),
            ("abc", None),
            (".5", Some(500)),
            ("18446744073709551615", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_cpu(text).ok(), expected, "cpu {text:?}");
        }
    }

    #[test]
    fn memory_quantities() {
        let cases = [
            ("512Mi", Some(512 << 20)),
            ("4Gi", Some(4 << 30)),
            ("1G", Some(1_000_000_000)),
            ("1024", Some(1024)),
            ("1.5Gi", Some(3 << 29)),
            ("1e3", Some(1000)),
            ("1e30", None),
            ("4gi", None),
            ("Gi", None),
            ("1.5", None),
            ("16Ei", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_memory(text).ok(), expected, "memory {text:?}");
        }
    }

    #[test]
    fn durations() {
        let cases = [
            ("90s", Some(90)),
            ("1h", Some(3600)),
            ("1h30m", Some(5400)),
            ("2d", Some(172_800)),
            ("", None),
            ("1", None),
            ("h", None),
            ("1x", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text).ok(), expected, "duration {text:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for millis in [250, 1000, 1500, 64_000] {
            assert_eq!(parse_cpu(&Cpu(millis).to_string()), Ok(millis));
        }
        assert_eq!(Memory(4 << 30).to_string(), "4Gi");
        assert_eq!(Memory(3 << 29).to_string(), "1.5Gi");
    }
}
