//! The `tandem` command line (`src/cli/`).

mod cli;

fn main() {
    cli::main()
}
