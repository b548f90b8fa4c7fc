//! `compare A.json B.json ...`: the figures of several runs side by side,
//! with each run's ratio to the first, so peers measured by the same client
//! can be read in one table.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// (label, JSON pointer into the report, lower is better)
const FIGURES: &[(&str, &str, bool)] = &[
    ("connections", "/report/connections", false),
    ("delivered frames/s", "/report/delivered_frames_per_sec", false),
    ("lost", "/report/lost", true),
    ("duplicates", "/report/duplicates", true),
    ("delivery p50 (us)", "/report/delivery_latency_us/p50", true),
    ("delivery p99 (us)", "/report/delivery_latency_us/p99", true),
    ("last receiver p50 (us)", "/report/last_receiver_latency_us/p50", true),
    ("last receiver p99 (us)", "/report/last_receiver_latency_us/p99", true),
    ("last receiver max (us)", "/report/last_receiver_latency_us/max", true),
    ("server B/connection", "/report/server_bytes_per_connection", true),
    ("server CPU us/frame", "/report/server_cpu_us_per_delivery", true),
    ("server CPU us/message delivered", "/report/server_cpu_us_per_message_delivered", true),
    ("server B/connection held", "/report/server_bytes_per_connection_held", true),
    // The tags scenario: phase 0 publishes to the tag, phase 1 to the room.
    ("tag: publish p50 (us)", "/report/phases/0/publish_latency_us/p50", true),
    ("tag: last recv p99 (us)", "/report/phases/0/last_receiver_latency_us/p99", true),
    ("tag: CPU us/message", "/report/phases/0/server_cpu_us_per_message", true),
    ("full: publish p50 (us)", "/report/phases/1/publish_latency_us/p50", true),
    ("full: last recv p99 (us)", "/report/phases/1/last_receiver_latency_us/p99", true),
    ("full: CPU us/message", "/report/phases/1/server_cpu_us_per_message", true),
    ("tag/full CPU", "/report/cpu_ratio_tag_to_full", true),
    ("wrong receivers", "/report/wrong_receivers", true),
];

pub fn run(files: &[PathBuf]) -> Result<String> {
    if files.len() < 2 {
        bail!("compare needs at least two JSON reports");
    }
    let docs = files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
            let doc: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a loadtest JSON report", path.display()))?;
            if doc.pointer("/report").is_none() {
                bail!("{} is not a loadtest JSON report", path.display());
            }
            Ok(doc)
        })
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_stem().map_or_else(|| p.display().to_string(), |s| s.to_string_lossy().into_owned()))
        .collect();
    let mut out = format!("{:<24}", "figure");
    for name in &names {
        out.push_str(&format!(" {name:>18}"));
    }
    out.push('\n');
    for &(label, pointer, _) in FIGURES {
        let values: Vec<Option<f64>> = docs.iter().map(|d| d.pointer(pointer).and_then(|v| v.as_f64())).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        out.push_str(&format!("{label:<24}"));
        for (i, value) in values.iter().enumerate() {
            let cell = match (value, values[0]) {
                (Some(v), Some(base)) if i > 0 && base != 0.0 => format!("{} ({:.2}x)", fmt(*v), v / base),
                (Some(v), _) => fmt(*v),
                (None, _) => "-".to_owned(),
            };
            out.push_str(&format!(" {cell:>18}"));
        }
        out.push('\n');
    }
    out.push_str(&format!("ratios are each run divided by {}\n", names[0]));
    Ok(out)
}

fn fmt(v: f64) -> String {
    // Whole numbers and large ones need no decimals.
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_with_ratios() {
        let dir = std::env::temp_dir();
        let a = dir.join(format!("cmp-a-{}.json", std::process::id()));
        let b = dir.join(format!("cmp-b-{}.json", std::process::id()));
        std::fs::write(&a, r#"{"report":{"connections":10,"delivered_frames_per_sec":1000.0,"lost":0}}"#).unwrap();
        std::fs::write(&b, r#"{"report":{"connections":10,"delivered_frames_per_sec":250.0,"lost":0}}"#).unwrap();
        let table = run(&[a.clone(), b.clone()]).unwrap();
        std::fs::remove_file(a).unwrap();
        std::fs::remove_file(b).unwrap();
        let row = table.lines().find(|l| l.starts_with("delivered frames/s")).unwrap();
        assert!(row.contains("1000") && row.contains("250 (0.25x)"), "{table}");
        assert!(!table.contains("server CPU"), "figures absent from every report are left out");
    }

    #[test]
    fn refuses_non_reports() {
        let path = std::env::temp_dir().join(format!("cmp-bad-{}.json", std::process::id()));
        std::fs::write(&path, "{}").unwrap();
        let err = run(&[path.clone(), path.clone()]).unwrap_err();
        std::fs::remove_file(path).unwrap();
        assert!(err.to_string().contains("not a loadtest JSON report"));
    }
}
