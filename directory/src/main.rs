//! `kt-directory`: see [`kt_directory::cli`].

fn main() -> std::process::ExitCode {
    kt_directory::cli::main()
}
