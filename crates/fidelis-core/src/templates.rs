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
pub const TEMPLATES: &[Template] = &[
    Template {
        name: "retail",
        description: "A store card: points on every euro with a 24-month expiry, status points and three tiers.",
        source: include_str!("../templates/retail.yaml"),
    },
    Template {
        name: "airline",
        description: "A frequent-flyer program: miles by fare and cabin, status credits and four tiers, partner earning.",
        source: include_str!("../templates/airline.yaml"),
    },
    Template {
        name: "hotel",
        description: "A hotel program: points per stay, elite nights per night toward three elite tiers, suite bonuses.",
        source: include_str!("../templates/hotel.yaml"),
    },
    Template {
        name: "coffee",
        description: "A coffee card: stars per dollar, the tenth drink free, double-star Tuesdays and a birthday treat.",
        source: include_str!("../templates/coffee.yaml"),
    },
];

/// The template with this name.
pub fn find(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}
