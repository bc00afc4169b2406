use std::fmt;

/// One configuration problem, located as precisely as the loader can:
/// file, document (1-based, in file order), resource and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub document: Option<usize>,
    /// `Kind 'name'` of the resource, once known.
    pub resource: Option<String>,
    /// Dotted path of the field, such as `spec.operations[1].destinationSettings`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        match (self.document, &self.resource) {
            (Some(n), Some(resource)) => write!(f, ": document {n} ({resource})")?,
            (Some(n), None) => write!(f, ": document {n}")?,
            (None, Some(resource)) => write!(f, ": {resource}")?,
            (None, None) => {}
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a configuration, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Where a resource came from, to build located errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub document: usize,
    pub resource: String,
}

impl Origin {
    /// An error about `field` (relative to the document root) of this resource.
    pub fn error(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let field = field.into();
        ConfigError {
            file: self.file.clone(),
            document: Some(self.document),
            resource: Some(self.resource.clone()),
            field: (!field.is_empty()).then_some(field),
            message: message.into(),
        }
    }
}
