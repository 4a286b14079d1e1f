//! Log lines for shipping: the JSON formatting layer with flat fields, and the filter directives every
//! filter gets unless it says otherwise.
//!
//! JSON lines are one object each: `timestamp` (RFC 3339, UTC), `level`, `target`, `message`, then
//! every field of every span the event is in and every field of the event itself, all at the top
//! level, so Loki and Elasticsearch index them without a mapping. Where two carry the same name, the
//! innermost wins: an event's field over its spans', an inner span's over an outer one's. A field
//! named like one of the four fixed keys is written as `field_<name>` (a span's `message` too).

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The keys every JSON line has; a field by one of these names is renamed `field_<name>`.
const FIXED: [&str; 4] = ["timestamp", "level", "target", "message"];

/// Filter directives applied unless the operator's filter names the target: the ZooKeeper client
/// logs every connection attempt and state change at INFO, which sinew's own session lines
/// (`sinew::zk`) already say once, with the service and the ensemble.
const QUIET: [(&str, &str); 1] = [("zookeeper_client", "zookeeper_client=warn")];

/// `spec` (a filter in tracing's env-filter syntax) with [`QUIET`]'s directives for the targets it
/// does not mention.
pub fn with_defaults(spec: &str) -> String {
    let mut directives = spec.trim().to_string();
    for (target, directive) in QUIET {
        if !spec.contains(target) {
            directives.push(',');
            directives.push_str(directive);
        }
    }
    directives
}

/// The JSON formatting layer, writing to `writer`.
pub fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson)
        .with_writer(writer)
}

/// Formats an event as one flat JSON object (see the module doc). Span fields are read from what
/// the fmt layer stored for each span, which [`JsonFields`] writes as a JSON object.
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(stored) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(stored) {
                    for (name, value) in map {
                        insert(&mut fields, &name, value, false);
                    }
                }
            }
        }
        let mut visitor = Fields {
            fields: &mut fields,
            message: None,
        };
        event.record(&mut visitor);
        let message = visitor.message.take().unwrap_or_default();

        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_string()));
        line.insert("message".into(), Value::String(message));
        let fixed = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        // The fixed keys first, for a person reading the raw lines; then the fields by name.
        let rest = serde_json::to_string(&Value::Object(fields)).map_err(|_| fmt::Error)?;
        let head = fixed.strip_suffix('}').ok_or(fmt::Error)?;
        match rest.strip_prefix('{') {
            Some("}") | None => writeln!(writer, "{head}}}"),
            Some(tail) => writeln!(writer, "{head},{tail}"),
        }
    }
}

/// Adds a field, renaming one that clashes with a fixed key (`message` only counts as a clash when
/// it is not the event's own message).
fn insert(fields: &mut Map<String, Value>, name: &str, value: Value, event: bool) {
    if name.starts_with("log.") && event {
        // `log` records converted to events: their target and level are already the line's.
        return;
    }
    if FIXED.contains(&name) {
        fields.insert(format!("field_{name}"), value);
    } else {
        fields.insert(name.to_string(), value);
    }
}

/// Collects an event's fields as JSON values; `message` is kept apart.
struct Fields<'a> {
    fields: &'a mut Map<String, Value>,
    message: Option<String>,
}

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            insert(self.fields, field.name(), value, true);
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn lines(run: impl FnOnce()) -> Vec<Map<String, Value>> {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::registry().with(json_layer(buf.clone()));
        tracing::subscriber::with_default(subscriber, run);
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        out.lines()
            .map(|l| match serde_json::from_str(l) {
                Ok(Value::Object(m)) => m,
                other => panic!("not a JSON object: {l}: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn span_and_event_fields_are_flat_and_the_innermost_wins() {
        let got = lines(|| {
            let outer = tracing::info_span!("outer", service = "web", zone = "a");
            let _o = outer.enter();
            let inner = tracing::info_span!("inner", zone = "b", backend = "10.0.0.1:80");
            let _i = inner.enter();
            tracing::warn!(target: "sinew::test", backend = "10.0.0.2:80", attempts = 3u64, ok = true, "picked");
        });
        assert_eq!(got.len(), 1);
        let line = &got[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], "sinew::test");
        assert_eq!(line["message"], "picked");
        assert_eq!(line["service"], "web");
        assert_eq!(line["zone"], "b", "inner span over outer");
        assert_eq!(line["backend"], "10.0.0.2:80", "event over span");
        assert_eq!(line["attempts"], 3);
        assert_eq!(line["ok"], true);
        let ts = line["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
        for v in line.values() {
            assert!(!v.is_object() && !v.is_array(), "nested: {line:?}");
        }
        assert!(!line.contains_key("fields") && !line.contains_key("span"));
    }

    #[test]
    fn a_field_named_like_a_fixed_key_is_renamed() {
        let got = lines(|| {
            let span = tracing::info_span!("s", message = "from the span", level = 7u64);
            let _s = span.enter();
            tracing::info!(target = "a-field", "the event");
        });
        let line = &got[0];
        assert_eq!(line["message"], "the event");
        assert_eq!(line["field_message"], "from the span");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["field_level"], 7);
        assert_eq!(line["field_target"], "a-field");
        assert_eq!(line["target"], "sinew::logging::tests");
    }

    #[test]
    fn an_event_without_fields_or_spans_has_the_fixed_keys_only() {
        let got = lines(|| tracing::error!("plain"));
        let keys: Vec<&str> = got[0].keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 4, "{keys:?}");
        assert_eq!(got[0]["message"], "plain");
    }

    #[test]
    fn the_zookeeper_client_is_quiet_unless_the_filter_names_it() {
        assert_eq!(with_defaults("info"), "info,zookeeper_client=warn");
        let named = with_defaults("info,zookeeper_client=debug");
        assert_eq!(named, "info,zookeeper_client=debug");
    }
}
