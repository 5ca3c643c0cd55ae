//! Files compiled into the binary for the pages ratewarden writes or serves (the status page,
//! the replay report): uPlot 1.6.32, vendored in `assets/vendor/uplot` (MIT; its licence is
//! carried into every page that embeds it).
//!
//! This module only lays those files into a template; it knows nothing of what is drawn.

/// `template` with its placeholders filled: `/*UPLOT_CSS*/`, `/*UPLOT_JS*/` and
/// `/*UPLOT_LICENSE*/` (the licence text, safe inside a `/* */` or `<!-- -->` comment).
pub fn with_uplot(template: &str) -> String {
    template
        .replace(
            "/*UPLOT_CSS*/",
            include_str!("../assets/vendor/uplot/uPlot.min.css"),
        )
        .replace(
            "/*UPLOT_LICENSE*/",
            &include_str!("../assets/vendor/uplot/LICENSE")
                .replace("*/", "* /")
                .replace("--", "- -"),
        )
        .replace(
            "/*UPLOT_JS*/",
            include_str!("../assets/vendor/uplot/uPlot.iife.min.js"),
        )
}
