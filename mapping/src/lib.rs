//! The Azure IoT Operations data-flow *mapping language*
//! (`builtInTransformationSettings`): datasets, filter and map rules.
//!
//! # Stage order
//!
//! [`Transform::apply`] always runs, whatever order the YAML lists them in:
//!
//! 1. **datasets** – for each `datasets[i]`, the first record (in stored
//!    order) under its state-store key whose match `expression` over
//!    `$source.X` / `$context.X` inputs is `true` becomes `$context(<name>)`;
//! 2. **last known values** – every `<path> ? $last` path present (and not
//!    `null`) in this message is remembered (per compiled transform);
//! 3. **filter** – the message is dropped ([`Outcome::Filtered`]) as soon as
//!    one rule evaluates to `true` (OR of rules, 2026 polarity);
//! 4. **map** – rules are resolved top-down (wildcards expanded, lower-rank
//!    later rules specialize earlier ones), then evaluated; with at least one
//!    map rule only mapped outputs are emitted; without any, the payload
//!    passes through unchanged.
//!
//! # Choices where the documentation is silent or contradictory
//!
//! The full list, each one tested, is in `CHOICES.md`. In short:
//! * Filter polarity: `true` drops (2026 docs), rules are OR-ed; an Empty
//!   result keeps the message; another non-boolean is an error.
//! * Unary `!`/`-` bind tighter than `^` (`-2^2 = 4`); all binary levels,
//!   `^` included, are left-associative (`2^3^2 = 64`).
//! * Integers are 64-bit; overflow and integer division by zero are errors;
//!   NaN/infinite results are errors.
//! * A missing input (or JSON `null`) is Empty `()`: operators and functions
//!   (except `==`, `!=`, `typeof`) give Empty and an Empty result writes
//!   nothing. A copy without expression writes JSON as is (`null` included).
//! * `*` is a whole segment. At the end it captures down to leaf values; with
//!   segments after it, any object path under which they exist.
//!   Specialization compares the field read by `inputs[0]`: a later,
//!   lower-rank rule cancels earlier resolutions reading that field or a
//!   field inside it (a rename after `'*'→'*'` moves the field).
//! * User-property writes replace the incoming key, repeated writes in one
//!   transform append; Empty removes. `$metadata.header.k` is an alias of
//!   `$metadata.user_property.k`. The topic cannot be removed or wildcarded.
//! * Several datasets are allowed; a key absent from [`Datasets`] is an
//!   empty dataset (no match, no error).
//! * `? $last` values are per compiled transform, keyed by path, updated on
//!   arrival (before the filter), `null` ignored.
//! * Settings reject unknown fields; graph-only syntax (`??`, regex,
//!   window functions) is a compile error.
//!
//! # Public API
//!
//! * [`TransformSettings`] (+ [`MapSettings`], [`FilterSettings`],
//!   [`DatasetSettings`], [`SerializationFormat`]): serde structs with the
//!   AIO field names.
//! * [`Transform::compile`] → [`Transform`] or [`CompileError`]
//!   (`map[3].expression: unknown function 'ctoF' at column 1; did you mean 'cToF'?`).
//! * [`Transform::apply`]`(&mut self, `[`Message`]`, &`[`Datasets`]`)` →
//!   [`Outcome::Emit`] / [`Outcome::Filtered`] or a [`TransformError`] that
//!   names the rule (`map[2]: ...`).
//! * [`Json`] (objects: [`JsonMap`]): the JSON tree of payloads, dataset
//!   records and last values, fields in document order;
//!   [`Json::from_slice`] parses what serde_json accepts (faster),
//!   [`Json::write_to`] serializes; converts from and to `serde_json::Value`.
//! * [`Datasets`]: in-memory reference data (`set`, `set_json_lines`,
//!   `get`, `remove`) and [`parse_json_lines`] ([`DatasetError`] names the line).

mod dataset;
mod dataset_index;
mod dataset_match;
mod error;
mod expr;
mod functions;
#[doc(hidden)]
pub mod fuzzing;
mod json;
mod json_map;
mod json_parse;
mod json_serde;
mod last_value;
mod lexer;
mod parser;
mod passthrough;
mod path;
mod read;
mod rules;
mod settings;
mod transform;
mod value;
mod write;

pub use self::dataset::{parse_json_lines, Datasets};
pub use self::error::{CompileError, DatasetError, TransformError};
pub use self::json::Json;
pub use self::json_map::Map as JsonMap;
pub use self::settings::{
    DatasetSettings, FilterSettings, MapSettings, SerializationFormat, TransformSettings,
};
pub use self::transform::{Message, Outcome, Transform};
pub use self::value::Value;
