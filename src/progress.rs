//! Rendering a build's events: a live terminal view (indicatif), plain numbered lines for CI
//! (`#5 [build 2/4] RUN make`, output prefixed, DONE/CACHED/ERROR), one JSON object per line,
//! or nothing. Every mode ends with a summary the caller prints.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use forge_build::{Event, Progress, Stream};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ProgressMode {
    /// A live view on a terminal, plain otherwise.
    Auto,
    Tty,
    Plain,
    Json,
    Quiet,
}

/// The renderer for a mode; `auto` picks tty when stderr is a terminal.
pub(crate) fn renderer(mode: ProgressMode) -> Box<dyn Renderer> {
    use std::io::IsTerminal;
    match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => Box::new(TtyProgress::new()),
        ProgressMode::Tty => Box::new(TtyProgress::new()),
        ProgressMode::Auto | ProgressMode::Plain => Box::new(PlainProgress::new()),
        ProgressMode::Json => Box::new(JsonProgress::new()),
        ProgressMode::Quiet => Box::new(QuietProgress),
    }
}

/// A progress sink that can also close the display.
pub(crate) trait Renderer: Progress + Send {
    /// Ends live output (before the summary is printed).
    fn finish(&self) {}
    /// Whether the summary should be printed.
    fn summary(&self) -> bool {
        true
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

struct PlainState {
    numbers: HashMap<usize, usize>,
    next: usize,
    starts: HashMap<usize, Instant>,
    partial: HashMap<usize, Vec<u8>>,
}

/// Plain mode: BuildKit's numbered lines, plus the window of each step relative to the start
/// of the build, so overlapping steps can be seen.
pub(crate) struct PlainProgress {
    began: Instant,
    state: Mutex<PlainState>,
}

impl PlainProgress {
    pub(crate) fn new() -> Self {
        PlainProgress {
            began: Instant::now(),
            state: Mutex::new(PlainState {
                numbers: HashMap::new(),
                next: 1,
                starts: HashMap::new(),
                partial: HashMap::new(),
            }),
        }
    }

    fn line(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{text}");
    }
}

impl Progress for PlainProgress {
    fn event(&self, event: Event<'_>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let at = self.began.elapsed().as_secs_f64();
        match event {
            Event::Planned { .. } => {}
            Event::Warning { message } => self.line(&format!("WARNING: {message}")),
            Event::Phase { name } => self.line(&format!("#- {name}")),
            Event::Started { step, name } => {
                let n = s.next;
                s.next += 1;
                s.numbers.insert(step, n);
                s.starts.insert(step, Instant::now());
                self.line(&format!("#{n} {name}"));
            }
            Event::Cached { step } => {
                let n = s.numbers.get(&step).copied().unwrap_or(0);
                self.line(&format!("#{n} CACHED"));
            }
            Event::Miss { step, reason } => {
                let n = s.numbers.get(&step).copied().unwrap_or(0);
                self.line(&format!("#{n} cache miss: {reason}"));
            }
            Event::Output { step, data, .. } => {
                let n = s.numbers.get(&step).copied().unwrap_or(0);
                let since = s
                    .starts
                    .get(&step)
                    .map(|t| t.elapsed().as_secs_f64())
                    .unwrap_or(0.0);
                let buf = s.partial.entry(step).or_default();
                buf.extend_from_slice(data);
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                    self.line(&format!("#{n} {since:.3} {text}"));
                }
            }
            Event::Done { step, elapsed } | Event::Failed { step, elapsed, .. } => {
                let n = s.numbers.get(&step).copied().unwrap_or(0);
                if let Some(rest) = s.partial.remove(&step).filter(|b| !b.is_empty()) {
                    let since = elapsed.as_secs_f64();
                    self.line(&format!(
                        "#{n} {since:.3} {}",
                        String::from_utf8_lossy(&rest)
                    ));
                }
                let start = at - elapsed.as_secs_f64();
                match event {
                    Event::Failed { error, .. } => self.line(&format!("#{n} ERROR: {error}")),
                    _ => self.line(&format!(
                        "#{n} DONE {} [{start:.3}s -> {at:.3}s]",
                        secs(elapsed)
                    )),
                }
            }
        }
    }
}

impl Renderer for PlainProgress {}

/// JSON mode: one object per event and line, times in seconds since the build began.
pub(crate) struct JsonProgress {
    began: Instant,
    out: Mutex<()>,
}

impl JsonProgress {
    pub(crate) fn new() -> Self {
        JsonProgress {
            began: Instant::now(),
            out: Mutex::new(()),
        }
    }
}

impl Progress for JsonProgress {
    fn event(&self, event: Event<'_>) {
        let time = self.began.elapsed().as_secs_f64();
        let value = match event {
            Event::Planned { steps } => {
                serde_json::json!({"event": "planned", "steps": steps, "time": time})
            }
            Event::Warning { message } => {
                serde_json::json!({"event": "warning", "message": message, "time": time})
            }
            Event::Phase { name } => {
                serde_json::json!({"event": "phase", "name": name, "time": time})
            }
            Event::Started { step, name } => {
                serde_json::json!({"event": "started", "step": step, "name": name, "time": time})
            }
            Event::Cached { step } => {
                serde_json::json!({"event": "cached", "step": step, "time": time})
            }
            Event::Miss { step, reason } => {
                serde_json::json!({"event": "miss", "step": step, "reason": reason, "time": time})
            }
            Event::Output { step, stream, data } => serde_json::json!({
                "event": "output", "step": step, "time": time,
                "stream": match stream { Stream::Stdout => "stdout", Stream::Stderr => "stderr" },
                "data": String::from_utf8_lossy(data),
            }),
            Event::Done { step, elapsed } => {
                serde_json::json!({"event": "done", "step": step, "elapsed": elapsed.as_secs_f64(), "time": time})
            }
            Event::Failed {
                step,
                elapsed,
                error,
            } => {
                serde_json::json!({"event": "error", "step": step, "elapsed": elapsed.as_secs_f64(), "error": error, "time": time})
            }
        };
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
    }
}

impl Renderer for JsonProgress {}

/// `-q` / `--progress=quiet`: nothing but the image id at the end.
pub(crate) struct QuietProgress;

impl Progress for QuietProgress {
    fn event(&self, _event: Event<'_>) {}
}

impl Renderer for QuietProgress {
    fn summary(&self) -> bool {
        false
    }
}

/// The live view: one spinner per running step with its elapsed time and the tail of its
/// output; finished steps collapse into one line each.
pub(crate) struct TtyProgress {
    multi: MultiProgress,
    bars: Mutex<HashMap<usize, (ProgressBar, String)>>,
}

impl TtyProgress {
    pub(crate) fn new() -> Self {
        TtyProgress {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn collapse(&self, step: usize, verdict: &str) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((bar, name)) = bars.remove(&step) {
            let elapsed = bar.elapsed();
            bar.finish_and_clear();
            let _ = self
                .multi
                .println(format!("{verdict:>7} {name} {}", secs(elapsed)));
        }
    }
}

impl Progress for TtyProgress {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Started { step, name } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix} {elapsed:>4} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(name.to_owned());
                bar.enable_steady_tick(Duration::from_millis(120));
                self.bars
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(step, (bar, name.to_owned()));
            }
            Event::Output { step, data, .. } => {
                let bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((bar, _)) = bars.get(&step) {
                    let text = String::from_utf8_lossy(data);
                    if let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) {
                        bar.set_message(last.trim().to_owned());
                    }
                }
            }
            Event::Miss { .. } | Event::Planned { .. } => {}
            Event::Cached { step } => self.collapse(step, "CACHED"),
            Event::Done { step, .. } => self.collapse(step, "DONE"),
            Event::Failed { step, error, .. } => {
                self.collapse(step, "ERROR");
                let _ = self.multi.println(format!("        {error}"));
            }
            Event::Warning { message } => {
                let _ = self.multi.println(format!("WARNING: {message}"));
            }
            Event::Phase { name } => {
                let _ = self.multi.println(format!("        {name}"));
            }
        }
    }
}

impl Renderer for TtyProgress {
    fn finish(&self) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        for (_, (bar, _)) in bars.drain() {
            bar.finish_and_clear();
        }
    }
}
