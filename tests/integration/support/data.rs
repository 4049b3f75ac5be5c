//! Generated Pinterest triples (pin, geo, user sharing one id) for the engine tests, with the
//! dirty values of REFERENCE.md §1 mixed in, and the follower-count rule of the brief as an oracle.

use kinesis_delta::dataset::CATEGORIES;
use serde_json::{Value, json};

/// One post: the three records, as JSON values.
#[derive(Debug, Clone)]
pub struct Triple {
    /// The shared id.
    pub ind: i64,
    /// The pin record.
    pub pin: Value,
    /// The geo record.
    pub geo: Value,
    /// The user record.
    pub user: Value,
}

/// Each stream's record of a triple, in the shipped config's stream order (pin, geo, user).
pub const PARTS: [fn(&Triple) -> &Value; 3] = [|t| &t.pin, |t| &t.geo, |t| &t.user];

/// A deterministic triple for id `ind`.
pub fn triple(ind: i64) -> Triple {
    let k = ind as usize;
    let category = CATEGORIES[k % CATEGORIES.len()];
    let follower_count = match k % 10 {
        0 => "User Info Error".to_owned(),
        1 | 2 => format!("{}", k % 1000),
        3 => format!("{}M", k % 9 + 1),
        _ => format!("{}k", k % 900 + 1),
    };
    let story = k.is_multiple_of(17);
    let pin = if story {
        json!({"index": ind, "unique_id": format!("uuid-{ind}"), "title": "No Title Data Available",
               "description": "No description available Story format", "poster_name": "User Info Error",
               "follower_count": "User Info Error", "tag_list": "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e",
               "is_image_or_video": "multi-video(story page format)", "image_src": "Image src error.",
               "downloaded": 0, "save_location": format!("Local save in /data/{category}"), "category": category})
    } else {
        json!({"index": ind, "unique_id": format!("uuid-{ind}"), "title": format!("Τίτλος {ind}"),
               "description": if k.is_multiple_of(5) { String::new() } else { format!("Nice post {ind} …\u{a0}") },
               "poster_name": format!("Poster {} ", k % 50), "follower_count": follower_count,
               "tag_list": "Lowrider,Old Vintage Cars", "is_image_or_video": "image",
               "image_src": format!("https://i.pinimg.com/originals/{ind}.jpg"), "downloaded": 1,
               "save_location": format!("Local save in /data/{category}"), "category": category})
    };
    let sep = if k.is_multiple_of(2) { " " } else { "T" };
    let geo = json!({"ind": ind, "timestamp": format!("2020-08-28{sep}03:52:{:02}", k % 60),
                     "latitude": -89.9787, "longitude": -173.293, "country": "Albania"});
    let user = json!({"ind": ind, "first_name": "Abigail", "last_name": format!("Ali{}", k % 7),
                      "age": 20 + (k % 40) as i64, "date_joined": format!("2015-10-24{sep}11:23:51")});
    Triple {
        ind,
        pin,
        geo,
        user,
    }
}

/// The triples `from..from + count`.
pub fn triples(from: i64, count: i64) -> Vec<Triple> {
    (from..from + count).map(triple).collect()
}

/// Records for one table: (partition key, JSON bytes), with a random-looking key per record.
pub fn records(triples: &[Triple], pick: impl Fn(&Triple) -> &Value) -> Vec<(String, Vec<u8>)> {
    triples
        .iter()
        .map(|t| {
            (
                format!("key-{}", t.ind * 7919 % 1000),
                serde_json::to_vec(pick(t)).unwrap(),
            )
        })
        .collect()
}

/// The brief's follower-count rule, written independently of the SQL.
pub fn expected_follower_count(raw: &str) -> Option<i64> {
    let (digits, factor) = match raw.as_bytes().last() {
        Some(b'k') => (&raw[..raw.len() - 1], 1_000),
        Some(b'M') => (&raw[..raw.len() - 1], 1_000_000),
        _ => (raw, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok().map(|n| n * factor)
}

/// The records of one stream of the pipeline (`pin`, `geo` or `user`) for these triples.
pub fn stream_records(stream: &str, triples: &[Triple]) -> Vec<(String, Vec<u8>)> {
    match stream {
        "pin" => records(triples, |t| &t.pin),
        "geo" => records(triples, |t| &t.geo),
        _ => records(triples, |t| &t.user),
    }
}

/// Triples `from..from + n` whose pin record is about 200 KB (a long description): records large
/// enough to test memory and batch limits.
pub fn triples_with_big_pins(from: i64, n: i64) -> Vec<Triple> {
    let mut big = triples(from, n);
    for t in &mut big {
        t.pin["description"] = "x".repeat(200_000).into();
    }
    big
}
