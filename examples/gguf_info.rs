use std::path::Path;
fn main() {
    for a in std::env::args().skip(1) {
        let g = tandem::gguf::Gguf::open(Path::new(&a)).unwrap();
        for (k, v) in &g.metadata {
            let s = format!("{v:?}");
            println!("{k} = {}", if s.len() > 120 { &s[..120] } else { &s });
        }
        for t in &g.tensors {
            if t.name.starts_with("blk.") && !t.name.starts_with("blk.0.") {
                continue;
            }
            println!("{} {:?} {}", t.name, t.dims, t.type_id);
        }
    }
}
