//! How the tables write figures: MiB, and values with the digits that matter.

pub const MIB: f64 = (1u64 << 20) as f64;

pub fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A byte count in MiB for a table cell; "-" where it was not measured.
pub fn fmt_mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "-".into(), |b| fmt_value(b as f64 / MIB))
}
