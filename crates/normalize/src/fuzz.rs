//! Fuzz entry (`fuzz/fuzz_targets/normalize.rs`, and the property tests):
//! any message through a fixed set of profiles that uses every action, in
//! both directions. Panics if the result does not parse.

use std::sync::{Arc, OnceLock};

use palisade_b2bua::{Direction, StageContext};
use palisade_config::Config;
use palisade_config::normalization::RuleDirection;
use palisade_sip::{Editor, Message, ParseLimits};

use crate::{NormalizeStage, Program};

/// The profiles the fuzz target runs: every action kind, matches of every kind.
pub const FUZZ_CONFIG: &str = include_str!("fuzz_config.yaml");

fn program() -> &'static Arc<Program> {
    static P: OnceLock<Arc<Program>> = OnceLock::new();
    P.get_or_init(|| {
        let cfg: Config = match palisade_config::load_str(FUZZ_CONFIG, "fuzz_config.yaml") {
            Ok(c) => c,
            Err(e) => panic!("the fuzz config must load: {e}"),
        };
        Program::new(Arc::new(cfg))
    })
}

/// Runs every trunk's stages on `data` (when it parses) and checks the result.
pub fn normalize(data: &[u8]) {
    let limits = ParseLimits::default();
    let Ok(msg) = Message::parse(bytes::Bytes::copy_from_slice(data), &limits) else {
        return;
    };
    let program = program();
    let cfg = Arc::clone(program.config());
    for t in cfg.trunks() {
        for (dir, d) in [
            (RuleDirection::In, Direction::Inbound),
            (RuleDirection::Out, Direction::Outbound),
        ] {
            let Some(stage) = NormalizeStage::new(program, t.id, dir) else {
                continue;
            };
            let ctx = StageContext {
                trunk: t.id,
                trunk_name: &t.name,
                direction: d,
                source: Some(&msg),
                other_trunk: cfg.trunks().first().map(|f| f.id),
            };
            let mut edit = Editor::new(&msg);
            let _ = stage.run(&ctx, &mut edit, true);
            let out = edit.finish();
            let unlimited = ParseLimits {
                max_message_bytes: usize::MAX,
                max_headers: usize::MAX,
            };
            let again = match Message::parse(out.clone(), &unlimited) {
                Ok(m) => m,
                Err(e) => panic!(
                    "normalized message does not parse: {e}\n{}",
                    String::from_utf8_lossy(&out)
                ),
            };
            assert_eq!(again.call_id(), msg.call_id());
            assert_eq!(again.cseq(), msg.cseq());
            assert_eq!(again.from_tag(), msg.from_tag());
            assert_eq!(again.to_tag(), msg.to_tag());
        }
    }
}
