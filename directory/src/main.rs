fn main() -> std::process::ExitCode {
    kt_directory::cli::main()
}
