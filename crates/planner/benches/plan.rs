//! How long planning takes for Dockerfiles of growing size (parse excluded and included).
//! Run: `cargo bench -p forge-planner --bench plan`. Prints a table; asserts nothing.

use std::time::Instant;

use forge_planner::{OfflineResolver, PlanOptions};

fn dockerfile(stages: usize, steps: usize) -> String {
    let mut out = String::from("ARG BASE=alpine:3.20\n");
    for s in 0..stages {
        if s == 0 {
            out.push_str("FROM $BASE AS s0\n");
        } else {
            out.push_str(&format!("FROM s{} AS s{s}\n", s - 1));
        }
        out.push_str(&format!("ARG V{s}=1\nWORKDIR /w{s}\n"));
        for n in 0..steps {
            match n % 4 {
                0 => out.push_str(&format!(
                    "RUN --mount=type=cache,target=/c echo {s}-{n} $V{s}\n"
                )),
                1 => out.push_str(&format!("ENV E{n}=v{s}\n")),
                2 => out.push_str(&format!("COPY src/{s}/{n} /dst/{n}\n")),
                _ => {
                    if s > 0 {
                        out.push_str(&format!("COPY --from=s{} /w{} /from/{n}\n", s / 2, s / 2));
                    } else {
                        out.push_str(&format!("LABEL l{n}=x\n"));
                    }
                }
            }
        }
    }
    out
}

fn main() {
    let opts = PlanOptions::default();
    println!(
        "{:>7} {:>7} {:>7} {:>12} {:>12} {:>12}",
        "stages", "lines", "ops", "parse (ms)", "plan (ms)", "ops/ms"
    );
    for (stages, steps) in [(1, 20), (10, 20), (50, 40), (200, 50)] {
        let text = dockerfile(stages, steps);
        let iterations = if stages >= 200 { 3 } else { 20 };
        let mut parse_ms = f64::MAX;
        let mut plan_ms = f64::MAX;
        let mut ops = 0;
        for _ in 0..iterations {
            let t = Instant::now();
            let df = forge_parser::parse(&text).expect("bench Dockerfile parses");
            parse_ms = parse_ms.min(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let plan =
                forge_planner::plan(&df, &opts, &OfflineResolver).expect("bench Dockerfile plans");
            plan_ms = plan_ms.min(t.elapsed().as_secs_f64() * 1e3);
            ops = plan.graph.len();
        }
        println!(
            "{stages:>7} {:>7} {ops:>7} {parse_ms:>12.3} {plan_ms:>12.3} {:>12.0}",
            text.lines().count(),
            ops as f64 / plan_ms
        );
    }
}
