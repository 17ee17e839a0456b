//! forge-planner: turns a parsed Dockerfile into a build plan. It owns stages, ARG/ENV scoping
//! and build args, `--target` pruning, `COPY --from` and `--mount from=` edges, ONBUILD
//! triggers of base images, the image config each stage produces, and a [`BuildGraph`] whose
//! every op has a stable definition digest. It does no I/O: base images come through an
//! [`ImageResolver`].

mod config;
mod error;
mod gofmt;
mod graph;
mod plan;
mod platform;
mod render;
mod scope;

pub use config::{
    ContainerConfig, EmptyObject, HealthConfig, History, ImageConfig, ImageResolver,
    OfflineResolver, ResolvedImage, DEFAULT_PATH,
};
pub use error::PlanError;
pub use graph::{
    BuildGraph, FileAction, FileOp, InlineFile, Input, InputRole, MountSpec, Op, OpId, OpKind,
    RunOp, SourceRef,
};
pub use plan::{
    plan, NamedContext, Plan, PlanOptions, PlanWarning, ResolvedRef, StageBase, StagePlan,
};
pub use platform::Platform;
pub use render::{render_dot, render_text};
pub use scope::dockerignore_patterns;
