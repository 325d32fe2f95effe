fn main() {
    println!("Session {}", std::mem::size_of::<ferry::session::Session>());
    println!("MaybeTls {}", std::mem::size_of::<ferry::tls::MaybeTls>());
}
