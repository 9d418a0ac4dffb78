//! `fidelis program …`: definitions in, definitions out, templates.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::Subcommand;
use fidelis_core::templates;

use super::{EXIT_INVALID, compile, connect, explain, parse_program_document, print_problems};

#[derive(Debug, Subcommand)]
pub enum ProgramCommand {
    /// Create or replace a program from a definition file (YAML or JSON).
    Apply {
        /// The definition; it names the program with `code:`.
        file: PathBuf,
    },
    /// Create a program from an industry template.
    Create {
        /// The new program's code, [a-z0-9-].
        code: String,
        /// The template (see `fidelis program templates`).
        #[arg(long)]
        template: String,
    },
    /// Print a program's definition, as `apply` accepts it.
    Show {
        code: String,
        #[arg(long, value_enum, default_value = "yaml")]
        format: Format,
    },
    /// List the programs in the database.
    List,
    /// List the industry templates.
    Templates,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

pub async fn run(database: &str, command: ProgramCommand) -> Result<ExitCode> {
    match command {
        ProgramCommand::Apply { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let document = match parse_program_document(&text, &file) {
                Ok(d) => d,
                Err(problems) => {
                    print_problems(&problems);
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            };
            apply(database, &document, None).await
        }
        ProgramCommand::Create { code, template } => {
            let Some(t) = templates::find(&template) else {
                let names: Vec<&str> = templates::TEMPLATES.iter().map(|t| t.name).collect();
                bail!("no template {template:?}; there are: {}", names.join(", "));
            };
            let document = parse_program_document(t.source, std::path::Path::new("template.yaml"))
                .map_err(|p| anyhow::anyhow!("template {template} is broken: {}", p[0]))?;
            let store = connect(database).await?;
            if store.program(&code).await?.is_some() {
                bail!("program {code:?} exists already; change it with `fidelis program apply`");
            }
            apply(database, &document, Some(&code)).await
        }
        ProgramCommand::Show { code, format } => {
            let store = connect(database).await?;
            let program = super::program(&store, &code).await?;
            let document = &program.program.document;
            match format {
                Format::Yaml => print!("{}", yaml_serde::to_string(document)?),
                Format::Json => println!("{}", serde_json::to_string_pretty(document)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        ProgramCommand::List => {
            let store = connect(database).await?;
            for p in store.programs().await? {
                println!(
                    "{:<24} {:<32} revision {}  updated {}",
                    p.code,
                    p.name,
                    p.revision,
                    p.updated_at.to_rfc3339()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ProgramCommand::Templates => {
            for t in templates::TEMPLATES {
                println!("{:<12} {}", t.name, t.description);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn apply(
    database: &str,
    document: &fidelis_core::program::ProgramDocument,
    code: Option<&str>,
) -> Result<ExitCode> {
    let program = match compile(document, code) {
        Ok(p) => p,
        Err(problems) => {
            print_problems(&problems);
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let store = connect(database).await?;
    match store
        .put_program(&program, Utc::now(), &fidelis_store::Actor::cli())
        .await
    {
        Ok((loaded, created)) => {
            let verb = if created { "created" } else { "updated" };
            println!(
                "program {} {verb} (revision {}): {} currencies, {} base earning rule(s), {} tier group(s)",
                loaded.program.code,
                loaded.revision,
                loaded.program.currencies.len(),
                loaded.program.base_earning.len(),
                loaded.program.tier_groups.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(fidelis_store::StoreError::InvalidProgram(problems)) => {
            print_problems(&problems);
            Ok(ExitCode::from(EXIT_INVALID))
        }
        Err(e) => Err(explain(e)),
    }
}
