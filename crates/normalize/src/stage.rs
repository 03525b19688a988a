//! The [`Stage`] the engine runs: one per trunk and direction that has
//! something to do, sharing the [`Program`].

use std::sync::Arc;

use palisade_b2bua::{Direction, Stage, StageContext};
use palisade_config::TrunkId;
use palisade_config::normalization::RuleDirection;
use palisade_sip::Editor;
use tracing::{Level, debug, warn};

use crate::program::{Fired, Program, RunContext};

/// Normalization of one trunk in one direction.
#[derive(Debug, Clone)]
pub struct NormalizeStage {
    program: Arc<Program>,
    direction: RuleDirection,
}

impl NormalizeStage {
    /// The stage for messages going `direction` (`None` if there is nothing
    /// to run on `trunk` that way, so the engine need not call a stage).
    pub fn new(program: &Arc<Program>, trunk: TrunkId, direction: RuleDirection) -> Option<Self> {
        program.runs(trunk, direction).then(|| NormalizeStage {
            program: Arc::clone(program),
            direction,
        })
    }

    /// Runs the stage on `edit`'s message, records the result on `edit` and
    /// returns the rules that fired (with what they changed when `record`).
    /// The engine and `palisade normalize` both come through here.
    pub fn run(&self, ctx: &StageContext<'_>, edit: &mut Editor<'_>, record: bool) -> Vec<Fired> {
        let msg = edit.message();
        let rc = RunContext {
            trunk: ctx.trunk,
            direction: self.direction,
            other_trunk: ctx.other_trunk,
            source: ctx.source,
        };
        let out = self.program.run(msg, &rc, record);
        if out.work.is_modified() {
            out.work.record(edit);
        }
        out.fired
    }
}

/// The engine's direction as a rule direction.
pub fn rule_direction(d: Direction) -> RuleDirection {
    match d {
        Direction::Inbound => RuleDirection::In,
        Direction::Outbound => RuleDirection::Out,
    }
}

impl Stage for NormalizeStage {
    fn name(&self) -> &'static str {
        "normalize"
    }

    fn apply(&self, ctx: &StageContext<'_>, edit: &mut Editor<'_>) {
        let verbose = tracing::enabled!(Level::DEBUG);
        let fired = self.run(ctx, edit, verbose);
        let dir = match self.direction {
            RuleDirection::In => "in",
            RuleDirection::Out => "out",
        };
        for f in &fired {
            if f.skipped {
                warn!(trunk = ctx.trunk_name, direction = dir, profile = %f.profile,
                    rule = %f.rule, reason = %f.changes.join("; "), "normalization rule undone");
            } else {
                debug!(trunk = ctx.trunk_name, direction = dir, profile = %f.profile,
                    rule = %f.rule, changes = %f.changes.join("; "), "normalization rule fired");
            }
        }
    }
}

/// The stages for `trunk`: `(inbound, outbound)`, each `None` when the trunk
/// has nothing to run that way.
pub fn stages_for(
    program: &Arc<Program>,
    trunk: TrunkId,
) -> (Option<NormalizeStage>, Option<NormalizeStage>) {
    (
        NormalizeStage::new(program, trunk, RuleDirection::In),
        NormalizeStage::new(program, trunk, RuleDirection::Out),
    )
}

/// Installs the normalization stages of every trunk of `program`'s
/// configuration on `engine` (replacing the trunks' stage lists). Returns how
/// many stages were installed.
pub fn install(engine: &mut palisade_b2bua::Engine, program: &Arc<Program>) -> usize {
    let mut n = 0;
    for t in program.config().trunks() {
        let (inbound, outbound) = stages_for(program, t.id);
        if let Some(s) = inbound {
            engine.set_inbound_stages(t.id, vec![Box::new(s)]);
            n += 1;
        }
        if let Some(s) = outbound {
            engine.set_stages(t.id, vec![Box::new(s)]);
            n += 1;
        }
    }
    n
}
