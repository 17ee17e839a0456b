fn main() {
    forge_executor::sandbox_init_main()
}
