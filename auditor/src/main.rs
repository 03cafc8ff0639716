fn main() -> std::process::ExitCode {
    kt_auditor::cli::main()
}
