//! Industry templates: program definitions shipped as data files (YAML), ready to edit.
//!
//! The core only holds their text; parsing YAML happens at the edges (CLI, server), which
//! then compile the document like any other definition.

/// A template: its name and the definition's YAML source.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    pub name: &'static str,
    pub description: &'static str,
    pub source: &'static str,
}

/// Every template shipped with Fidelis.
pub const TEMPLATES: &[Template] = &[Template {
    name: "retail",
    description: "A store card: points on every euro with a 24-month expiry, status points and three tiers.",
    source: include_str!("../templates/retail.yaml"),
}];

/// The template with this name.
pub fn find(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}
