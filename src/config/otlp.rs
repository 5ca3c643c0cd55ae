//! `[otlp]`: where OTLP spans and log records name their org and app (SPEC §6,
//! `POST /v1/traces` and `/v1/logs`).

use serde::Deserialize;
use toml::Spanned;

use super::check::{Spanned2, at};
use crate::events::otlp::OtlpMapping;
use crate::model::valid_given_name;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOtlp {
    org_attributes: Spanned<Vec<String>>,
    app_attributes: Spanned<Vec<String>>,
    default_org: Option<Spanned<String>>,
}

impl Default for RawOtlp {
    fn default() -> Self {
        let d = OtlpMapping::default();
        RawOtlp {
            org_attributes: Spanned::new(0..0, d.org_attributes),
            app_attributes: Spanned::new(0..0, d.app_attributes),
            default_org: None,
        }
    }
}

impl RawOtlp {
    pub(super) fn validate(self) -> Result<OtlpMapping, Spanned2> {
        for (list, what) in [
            (&self.org_attributes, "org_attributes"),
            (&self.app_attributes, "app_attributes"),
        ] {
            if list.get_ref().iter().any(|k| k.trim().is_empty()) {
                return Err(at(
                    list.span(),
                    format!("{what} must list attribute keys, none empty"),
                ));
            }
        }
        if self.org_attributes.get_ref().is_empty() && self.default_org.is_none() {
            return Err(at(
                self.org_attributes.span(),
                "org_attributes is empty and default_org is unset: every span would be rejected (missing_org)",
            ));
        }
        if let Some(org) = &self.default_org
            && !valid_given_name(org.get_ref())
        {
            return Err(at(
                org.span(),
                "default_org must be 1-128 printable characters (and not __overflow__)",
            ));
        }
        Ok(OtlpMapping {
            org_attributes: self.org_attributes.into_inner(),
            app_attributes: self.app_attributes.into_inner(),
            default_org: self.default_org.map(Spanned::into_inner),
        })
    }
}
