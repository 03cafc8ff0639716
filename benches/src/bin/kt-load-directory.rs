//! `kt-directory` under another name, so that `kt-load`'s own test finds the directory
//! binary built from this tree (cargo only tells a package's tests where its own
//! binaries are).

fn main() -> std::process::ExitCode {
    kt_directory::cli::main()
}
