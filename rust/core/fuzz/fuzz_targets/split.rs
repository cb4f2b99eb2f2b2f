/// Cut `data` at positions taken from `cuts` (each byte a step of 1..=64).
pub fn pieces<'a>(data: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let (mut i, mut k) = (0, 0);
    while i < data.len() {
        let step = cuts.get(k).map_or(data.len(), |&c| 1 + (c as usize % 64));
        k += 1;
        let end = (i + step).min(data.len());
        out.push(&data[i..end]);
        i = end;
    }
    out
}
