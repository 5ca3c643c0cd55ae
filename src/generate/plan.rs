//! [`Plan`]: what of a config the generated rules and dashboard depend on, read once, and
//! how they write its thresholds. Never looks at anything but the validated config.

use crate::config::Config;
use crate::model::Dimension;

/// A `UsageHigh` threshold pair `[warning, critical]` in basis points (7000 = 70 %), as
/// `config` validates it.
pub type Pair = [u32; 2];

/// What of a config the generated files depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `[alerts] thresholds`: every org without its own.
    pub thresholds: Pair,
    /// Each distinct `[[orgs]] thresholds` other than `[alerts]`'s, with its orgs, both in the
    /// order the file first names them. An org whose own pair equals the default is left out:
    /// the default rules already judge it right.
    pub own: Vec<(Pair, Vec<String>)>,
    /// Dimensions with a limit for some org, in label order ([`Dimension::ALL`]).
    pub dimensions: Vec<Dimension>,
}

impl Plan {
    /// Reads what the generated files depend on from `config`.
    ///
    /// A dimension counts when the default tier (which every org not listed is on) or a listed
    /// org's limits set it. A tier no org is on does not count: its panels and rules would
    /// wait for series that never come.
    pub fn of(config: &Config) -> Plan {
        let thresholds = [config.alerts.warning_bp, config.alerts.critical_bp];
        let mut own: Vec<(Pair, Vec<String>)> = Vec::new();
        for org in &config.orgs {
            let Some(pair) = org.thresholds_bp.filter(|p| *p != thresholds) else {
                continue;
            };
            match own.iter_mut().find(|(p, _)| *p == pair) {
                Some((_, orgs)) => orgs.push(org.id.clone()),
                None => own.push((pair, vec![org.id.clone()])),
            }
        }
        let default = config.default_limits();
        let default_models = config.default_models();
        // Model scopes' limits count too: their series carry a `model` label beside the org's.
        let limits: Vec<_> = std::iter::once(&default)
            .chain(config.orgs.iter().map(|o| &o.limits))
            .chain(default_models.iter().map(|m| &m.limits))
            .chain(
                config
                    .orgs
                    .iter()
                    .flat_map(|o| o.models.iter().map(|m| &m.limits)),
            )
            .collect();
        let dimensions = Dimension::ALL
            .into_iter()
            .filter(|d| limits.iter().any(|l| d.limit(l) > 0))
            .collect();
        Plan {
            thresholds,
            own,
            dimensions,
        }
    }

    /// Whether some org has a limit in `d`.
    pub fn has(&self, d: Dimension) -> bool {
        self.dimensions.contains(&d)
    }

    /// Orgs with their own thresholds, group by group.
    pub(super) fn own_orgs(&self) -> impl Iterator<Item = &str> {
        self.own
            .iter()
            .flat_map(|(_, orgs)| orgs.iter().map(String::as_str))
    }
}

/// `bp` as a ratio with at least two decimals, as the rules have always written thresholds
/// (7000 → `0.70`, 8750 → `0.875`, 10000 → `1.00`).
pub(super) fn ratio(bp: u32) -> String {
    let text = format!("{}.{:04}", bp / 10_000, bp % 10_000);
    let keep = text.trim_end_matches('0').len().max(text.len() - 2);
    text[..keep].to_string()
}

/// `bp` as a percentage without trailing zeros (7000 → `70`, 8750 → `87.5`).
pub(super) fn percent(bp: u32) -> String {
    let text = format!("{}.{:02}", bp / 100, bp % 100);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_written_as_the_rules_always_wrote_them() {
        assert_eq!(ratio(7000), "0.70");
        assert_eq!(ratio(9000), "0.90");
        assert_eq!(ratio(8750), "0.875");
        assert_eq!(ratio(8751), "0.8751");
        assert_eq!(ratio(10_000), "1.00");
        assert_eq!(ratio(1), "0.0001");
        assert_eq!(percent(7000), "70");
        assert_eq!(percent(8750), "87.5");
        assert_eq!(percent(8751), "87.51");
        assert_eq!(percent(10_000), "100");
        assert_eq!(percent(1), "0.01");
    }

    #[test]
    fn the_defaults_plan_is_rpm_and_concurrency_at_70_and_90() {
        let plan = Plan::of(&Config::default());
        assert_eq!(plan.thresholds, [7000, 9000]);
        assert!(plan.own.is_empty());
        assert_eq!(
            plan.dimensions,
            [Dimension::Rpm, Dimension::Concurrency],
            "the presets set rpm and concurrency only"
        );
    }

    #[test]
    fn overrides_group_by_pair_in_file_order_and_unused_tiers_do_not_count() {
        let config = Config::parse(
            r#"
[tiers.big]
rpm = 100
daily = 5000
[tiers.unused]
tpd = 7
[[orgs]]
id = "a"
tier = "big"
thresholds = [0.5, 0.8]
[[orgs]]
id = "b"
thresholds = [0.6, 0.9]
[[orgs]]
id = "c"
thresholds = [0.5, 0.8]
[[orgs]]
id = "d"
thresholds = [0.7, 0.9]
"#,
            "t.toml",
        )
        .expect("valid");
        let plan = Plan::of(&config);
        assert_eq!(
            plan.own,
            [
                ([5000, 8000], vec!["a".to_string(), "c".to_string()]),
                ([6000, 9000], vec!["b".to_string()]),
            ],
            "d's pair is the default's"
        );
        assert_eq!(plan.own_orgs().collect::<Vec<_>>(), ["a", "c", "b"]);
        assert_eq!(
            plan.dimensions,
            [Dimension::Rpm, Dimension::Daily, Dimension::Concurrency]
        );
    }
}
