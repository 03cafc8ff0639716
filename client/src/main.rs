fn main() -> std::process::ExitCode {
    kt_client::cli::main()
}
