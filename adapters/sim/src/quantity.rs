//! Kubernetes quantities in the canonical form the API server writes back, so that an
//! exported object reads like one from a real cluster.

/// Millicores as a cpu quantity: whole cores without a suffix (`"2"`), otherwise
/// millicores (`"500m"`, `"1500m"`), as the API server canonicalises them.
pub fn format_cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// The binary suffixes, largest first, with the power of two each stands for.
const SUFFIXES: [(&str, u32); 6] = [
    ("Ei", 60),
    ("Pi", 50),
    ("Ti", 40),
    ("Gi", 30),
    ("Mi", 20),
    ("Ki", 10),
];

/// Bytes as a memory quantity with the largest binary suffix that divides it exactly
/// (`"256Mi"`, `"1Gi"`, `"1536Mi"`), or plain bytes when none does.
pub fn format_memory(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_owned();
    }
    for (suffix, shift) in SUFFIXES {
        if bytes.trailing_zeros() >= shift {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// The inverse of [`format_memory`]: plain bytes or a binary suffix (what the sim
/// writes); `None` for any other form.
pub fn parse_memory(text: &str) -> Option<u64> {
    for (suffix, shift) in SUFFIXES {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<u64>().ok()?.checked_mul(1 << shift);
        }
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_are_canonical() {
        for (millis, text) in [
            (0, "0"),
            (1, "1m"),
            (250, "250m"),
            (500, "500m"),
            (1000, "1"),
            (1500, "1500m"),
            (2000, "2"),
            (64_000, "64"),
        ] {
            assert_eq!(format_cpu(millis), text, "{millis}");
        }
    }

    #[test]
    fn memory_quantities_use_the_largest_exact_binary_suffix() {
        for (bytes, text) in [
            (0, "0"),
            (1, "1"),
            (1000, "1000"),
            (1024, "1Ki"),
            (1536, "1536"),
            (3 << 10, "3Ki"),
            (256 << 20, "256Mi"),
            (1536 << 20, "1536Mi"),
            (1 << 30, "1Gi"),
            (64 << 30, "64Gi"),
            (5 << 40, "5Ti"),
            ((1 << 30) + 1, "1073741825"),
        ] {
            assert_eq!(format_memory(bytes), text, "{bytes}");
        }
    }

    #[test]
    fn memory_parses_back_what_it_formats() {
        for bytes in [0, 1, 1023, 1 << 10, 3 << 20, 200 << 30, 1536 << 20] {
            assert_eq!(parse_memory(&format_memory(bytes)), Some(bytes), "{bytes}");
        }
        assert_eq!(parse_memory("2G"), None);
        assert_eq!(parse_memory("Gi"), None);
    }
}
