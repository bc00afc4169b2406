//! Data flows: each enabled flow runs one [`FlowRunner`] task that reads its
//! queue in order, prepares each message for its destination, sends the
//! batch and acknowledges it in the queue only after the endpoint confirmed.
//! The sink keeps the next batch in flight while the previous one is being
//! confirmed ([`window`]).

mod replay;
mod runner;
mod topic_template;
mod window;

pub use replay::{ReplayReport, ReplayRequest};
pub use runner::{FlowRunner, RunnerSettings};
pub use topic_template::{TemplateError, TopicTemplate};
