// `sqlx::migrate!` embeds the migration files at compile time; cargo does not know about them,
// so a new migration would not rebuild the gateway (sqlx's documented fix).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
