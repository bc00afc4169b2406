//! Enumerations as Azure IoT Operations spells them. Its documentation
//! writes values in several cases (`Enabled`, `enabled`), so they are
//! matched case-insensitively; an unknown value lists the allowed ones.

/// Declares an enum deserialized case-insensitively from its variant names.
macro_rules! ci_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALLOWED: &'static [&'static str] = &[$(stringify!($variant)),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => stringify!($variant)),+ }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                $(if text.eq_ignore_ascii_case(stringify!($variant)) {
                    return Ok(Self::$variant);
                })+
                Err(serde::de::Error::custom(format!(
                    "unknown value '{}', expected one of: {}",
                    text,
                    Self::ALLOWED.join(", ")
                )))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use ci_enum;

ci_enum!(
    /// `Enabled` / `Disabled` switches.
    Toggle { Enabled, Disabled }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_case_is_accepted_and_unknown_values_list_the_allowed_ones() {
        let t: Toggle = serde_yaml::from_str("enabled").unwrap();
        assert_eq!(t, Toggle::Enabled);
        let t: Toggle = serde_yaml::from_str("DISABLED").unwrap();
        assert_eq!(t, Toggle::Disabled);
        let err = serde_yaml::from_str::<Toggle>("On")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("unknown value 'On', expected one of: Enabled, Disabled"),
            "{err}"
        );
    }
}
