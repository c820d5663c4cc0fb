//! The floor under the store's write rate: raw sled, the same key shapes and
//! value size as one pattern record and its three index entries (record,
//! hash index, time index, import key), written 512 records at a time as
//! plain inserts, per-tree batches, or one multi-tree transaction.
//!
//! ```text
//! cargo run --release -p metamesh-storage --example sled_floor -- N plain|batch|tx
//! ```
#![allow(clippy::unwrap_used)]
use sled::Transactional;
use std::time::Instant;
fn main() {
    let n: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let mode = std::env::args().nth(2).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(tmp.path())
        .cache_capacity(64 << 20)
        .open()
        .unwrap();
    let trees: Vec<sled::Tree> = (0..5)
        .map(|i| db.open_tree(format!("t{i}")).unwrap())
        .collect();
    let val = vec![7u8; 450];
    let t0 = Instant::now();
    let mut i = 0u64;
    while i < n {
        let hi = (i + 512).min(n);
        match mode.as_str() {
            "plain" => {
                for j in i..hi {
                    let h = blake3::hash(&j.to_le_bytes());
                    let mut k = vec![38u8; 39];
                    k.extend_from_slice(&j.to_be_bytes());
                    trees[0].insert(&k, &val[..]).unwrap();
                    trees[1].insert(h.as_bytes(), &k[..]).unwrap();
                    let mut tk = j.to_be_bytes().to_vec();
                    tk.extend_from_slice(&k);
                    trees[2].insert(tk, &[][..]).unwrap();
                    let h2 = blake3::hash(&(j ^ 0xdead).to_le_bytes());
                    trees[3].insert(h2.as_bytes(), &k[..]).unwrap();
                }
            }
            "batch" => {
                let mut b: Vec<sled::Batch> = (0..4).map(|_| sled::Batch::default()).collect();
                for j in i..hi {
                    let h = blake3::hash(&j.to_le_bytes());
                    let mut k = vec![38u8; 39];
                    k.extend_from_slice(&j.to_be_bytes());
                    b[0].insert(k.clone(), &val[..]);
                    b[1].insert(h.as_bytes(), k.clone());
                    let mut tk = j.to_be_bytes().to_vec();
                    tk.extend_from_slice(&k);
                    b[2].insert(tk, &[][..]);
                    let h2 = blake3::hash(&(j ^ 0xdead).to_le_bytes());
                    b[3].insert(h2.as_bytes(), k);
                }
                for (t, b) in trees.iter().zip(b) {
                    t.apply_batch(b).unwrap();
                }
            }
            _ => {
                trees[..]
                    .transaction(|t| {
                        for j in i..hi {
                            let h = blake3::hash(&j.to_le_bytes());
                            let mut k = vec![38u8; 39];
                            k.extend_from_slice(&j.to_be_bytes());
                            t[0].insert(k.clone(), &val[..])?;
                            t[1].insert(h.as_bytes(), k.clone())?;
                            let mut tk = j.to_be_bytes().to_vec();
                            tk.extend_from_slice(&k);
                            t[2].insert(tk, &[][..])?;
                            let h2 = blake3::hash(&(j ^ 0xdead).to_le_bytes());
                            t[3].insert(h2.as_bytes(), k)?;
                        }
                        Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                    })
                    .unwrap();
            }
        }
        i = hi;
    }
    db.flush().unwrap();
    let s = t0.elapsed().as_secs_f64();
    println!(
        "{mode}: {n} in {s:.2}s = {:.0}/s, size {} MiB",
        n as f64 / s,
        db.size_on_disk().unwrap() >> 20
    );
}
