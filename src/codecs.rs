//! The shell's side of the TTN JavaScript codecs (`profile = "js:PATH"`): reads the codec file and
//! gives the sandboxed runtime of the pure `decode::js` its clock. Used at start (the configured
//! devices) and by `device.upsert` (a codec is loaded and test-run before anything changes).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;

/// Loads a TTN-format JavaScript codec (`profile = "js:PATH"`, the path relative to the config file),
/// sandboxed with the default limits, and test-runs it ([`crate::decode::js::JsCodec::self_test`]).
pub fn load_js_codec(config: &Config, profile: &str, path: &str) -> anyhow::Result<Box<dyn crate::decode::Decoder>> {
    use crate::decode::js::{JsCodec, JsLimits};
    let full = config.resolve_path(Path::new(path));
    let source = std::fs::read_to_string(&full).with_context(|| format!("reading codec {}", full.display()))?;
    // The decode module is pure: the shell gives the codec runtime its clock (monotonic).
    let origin = std::time::Instant::now();
    let clock: crate::decode::js::Clock = Arc::new(move || origin.elapsed());
    let mut codec = JsCodec::load(profile, &source, JsLimits::default(), clock)
        .map_err(|e| anyhow::anyhow!("codec {}: {e}", full.display()))?;
    codec.self_test().map_err(|e| anyhow::anyhow!("codec {}: {e}", full.display()))?;
    Ok(Box::new(codec))
}
