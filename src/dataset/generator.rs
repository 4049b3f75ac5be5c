//! The deterministic generator. Shares follow REFERENCE.md §1: follower counts 74% `<n>k`, 17%
//! digits, 7% `<n>M`, 1.5% `User Info Error`; story-format rows carrying most placeholders at once;
//! descriptions cut off with `…` and a non-breaking space; Greek and Cyrillic titles; poster names
//! with trailing spaces, emoji or `|`; empty strings; one person under many ids.

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use fake::Fake;
use fake::faker::address::en::CountryName;
use fake::faker::company::en::{CatchPhrase, CompanyName};
use fake::faker::lorem::en::{Sentence, Words};
use fake::faker::name::en::{FirstName, LastName, Name};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{GeoRow, PinRow, Post, UserRow};

/// The 13 categories.
pub const CATEGORIES: [&str; 13] = [
    "art",
    "beauty",
    "christmas",
    "diy-and-crafts",
    "education",
    "event-planning",
    "finance",
    "home-decor",
    "mens-fashion",
    "quotes",
    "tattoos",
    "travel",
    "vehicles",
];

/// Titles in other scripts, as seen in the source data.
const NON_LATIN_TITLES: [&str; 6] = [
    "Ιδέες για χριστουγεννιάτικη διακόσμηση",
    "Τα καλύτερα δώρα",
    "Πώς να φτιάξετε κεριά",
    "Лучшие идеи для дома",
    "Новогодний декор своими руками",
    "Татуировки для мужчин",
];

const STORY_TAGS: &str = "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e";

/// How much data, and from which seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetSpec {
    /// Rows per table.
    pub rows: usize,
    /// The seed (the original emulator seeded its random offsets with 100).
    pub seed: u64,
    /// Write datetimes as `2020-08-28T03:52:47` (Python's `isoformat()`) instead of the space form.
    pub isoformat: bool,
}

impl Default for DatasetSpec {
    fn default() -> Self {
        Self {
            rows: 11_150,
            seed: 100,
            isoformat: false,
        }
    }
}

/// The generated tables, row by row on demand.
#[derive(Debug, Clone, Copy)]
pub struct Dataset {
    spec: DatasetSpec,
}

impl Dataset {
    /// A dataset of `spec`.
    pub fn new(spec: DatasetSpec) -> Self {
        Self { spec }
    }

    /// Rows per table.
    pub fn len(&self) -> usize {
        self.spec.rows
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.spec.rows == 0
    }

    /// Every post, in id order.
    pub fn posts(&self) -> impl Iterator<Item = Post> + '_ {
        (0..self.spec.rows).map(|k| self.post(k))
    }

    /// Post `k` (its three rows share id `k`).
    pub fn post(&self, k: usize) -> Post {
        let mut rng = self.rng(k as u64, 0x5049_4e00);
        let ind = k as i64;
        let pin = pin_row(ind, &mut rng);
        let mut rng = self.rng(k as u64, 0x4745_4f00);
        let geo = GeoRow {
            ind,
            timestamp: self.datetime(&mut rng, date(2017, 12, 1), date(2022, 12, 31)),
            // Leaning towards -90, as the source does.
            latitude: round4(-90.0 + 180.0 * rng.random::<f64>().powi(3)),
            longitude: round4(rng.random_range(-180.0..180.0)),
            country: CountryName().fake_with_rng(&mut rng),
        };
        let mut rng = self.rng(k as u64, 0x5553_4500);
        // One person, many ids: the person is drawn from a pool a quarter of the table's size.
        let pool = (self.spec.rows / 4).max(1) as u64;
        let mut person = self.rng(rng.random_range(0..pool), 0x5045_5200);
        let user = UserRow {
            ind,
            first_name: FirstName().fake_with_rng(&mut person),
            last_name: LastName().fake_with_rng(&mut person),
            age: person.random_range(20..=60),
            date_joined: self.datetime(&mut rng, date(2015, 1, 1), date(2017, 12, 31)),
        };
        Post { pin, geo, user }
    }

    fn rng(&self, k: u64, table: u64) -> StdRng {
        StdRng::seed_from_u64(
            self.spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ k.wrapping_mul(0xBF58_476D_1CE4_E5B9)
                ^ table,
        )
    }

    fn datetime(&self, rng: &mut StdRng, from: NaiveDateTime, to: NaiveDateTime) -> String {
        let seconds = rng.random_range(0..(to - from).num_seconds());
        let at = from + TimeDelta::seconds(seconds);
        let format = if self.spec.isoformat {
            "%Y-%m-%dT%H:%M:%S"
        } else {
            "%Y-%m-%d %H:%M:%S"
        };
        at.format(format).to_string()
    }
}

fn date(y: i32, m: u32, d: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Picks with probability `p`.
fn chance(rng: &mut StdRng, p: f64) -> bool {
    rng.random::<f64>() < p
}

fn pin_row(index: i64, rng: &mut StdRng) -> PinRow {
    let category = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
    let unique_id = uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string();
    let save_location = format!("Local save in /data/{category}");
    if chance(rng, 0.04) {
        // A story-format post: most placeholders at once.
        return PinRow {
            index,
            unique_id,
            title: "No Title Data Available".into(),
            description: "No description available Story format".into(),
            poster_name: "User Info Error".into(),
            follower_count: "User Info Error".into(),
            tag_list: STORY_TAGS.into(),
            is_image_or_video: "multi-video(story page format)".into(),
            image_src: "Image src error.".into(),
            downloaded: 0,
            save_location,
            category: category.into(),
        };
    }
    let title = match rng.random::<f64>() {
        r if r < 0.02 => "No Title Data Available".to_owned(),
        r if r < 0.03 => String::new(),
        r if r < 0.06 => NON_LATIN_TITLES[rng.random_range(0..NON_LATIN_TITLES.len())].to_owned(),
        _ => CatchPhrase().fake_with_rng(rng),
    };
    let description = match rng.random::<f64>() {
        r if r < 0.02 => "No description available".to_owned(),
        r if r < 0.03 => "Untitled".to_owned(),
        r if r < 0.04 => String::new(),
        r if r < 0.24 => {
            let text: String = Sentence(8..20).fake_with_rng(rng);
            let cut = text.char_indices().nth(40).map_or(text.len(), |(i, _)| i);
            format!("{}…\u{a0}", &text[..cut])
        }
        _ => Sentence(5..15).fake_with_rng(rng),
    };
    let name: String = if chance(rng, 0.5) {
        Name().fake_with_rng(rng)
    } else {
        CompanyName().fake_with_rng(rng)
    };
    let poster_name = match rng.random::<f64>() {
        r if r < 0.01 => "User Info Error".to_owned(),
        r if r < 0.04 => format!("{name}  "),
        r if r < 0.06 => format!("{name} ✨"),
        r if r < 0.08 => format!("{name} | Blog"),
        _ => name,
    };
    let follower_count = if poster_name == "User Info Error" {
        poster_name.clone()
    } else {
        match rng.random::<f64>() {
            r if r < 0.015 => "User Info Error".to_owned(),
            r if r < 0.755 => format!("{}k", rng.random_range(1..1000)),
            r if r < 0.925 => rng.random_range(0..1000).to_string(),
            _ => format!("{}M", rng.random_range(1..=15)),
        }
    };
    let tag_list = if chance(rng, 0.01) {
        String::new()
    } else {
        let words: Vec<String> = Words(3..8).fake_with_rng(rng);
        words
            .iter()
            .map(|w| capitalize(w))
            .collect::<Vec<_>>()
            .join(",")
    };
    let is_image_or_video = if chance(rng, 0.22) { "video" } else { "image" };
    let image_src = if chance(rng, 0.01) {
        "Image src error.".to_owned()
    } else {
        let hex: String = (0..16)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect();
        let ext = if chance(rng, 0.8) { "jpg" } else { "png" };
        format!(
            "https://i.pinimg.com/originals/{}/{}/{}/{hex}.{ext}",
            &hex[..2],
            &hex[2..4],
            &hex[4..6]
        )
    };
    PinRow {
        index,
        unique_id,
        title,
        description,
        poster_name,
        follower_count,
        tag_list,
        is_image_or_video: is_image_or_video.into(),
        image_src,
        downloaded: i64::from(!chance(rng, 0.03)),
        save_location,
        category: category.into(),
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(posts: &[Post], f: impl Fn(&Post) -> bool) -> f64 {
        posts.iter().filter(|p| f(p)).count() as f64 / posts.len() as f64
    }

    #[test]
    fn a_seed_gives_the_same_rows_and_another_seed_others() {
        let a = Dataset::new(DatasetSpec {
            rows: 50,
            ..DatasetSpec::default()
        });
        let b = Dataset::new(DatasetSpec {
            rows: 50,
            ..DatasetSpec::default()
        });
        let c = Dataset::new(DatasetSpec {
            rows: 50,
            seed: 7,
            ..DatasetSpec::default()
        });
        assert_eq!(a.posts().collect::<Vec<_>>(), b.posts().collect::<Vec<_>>());
        assert_ne!(a.post(3), c.post(3));
        assert_eq!(
            a.post(17),
            a.posts().nth(17).unwrap(),
            "random access equals iteration"
        );
    }

    #[test]
    fn ids_align_and_every_dirty_kind_is_present_at_about_its_share() {
        let posts: Vec<Post> = Dataset::new(DatasetSpec::default()).posts().collect();
        assert_eq!(posts.len(), 11_150);
        assert!(posts.iter().enumerate().all(|(k, p)| {
            let k = k as i64;
            p.pin.index == k && p.geo.ind == k && p.user.ind == k
        }));
        let fc = |p: &Post, f: fn(&str) -> bool| f(&p.pin.follower_count);
        let k_share = share(&posts, |p| fc(p, |s| s.ends_with('k')));
        let m_share = share(&posts, |p| fc(p, |s| s.ends_with('M')));
        let digits = share(&posts, |p| fc(p, |s| s.bytes().all(|b| b.is_ascii_digit())));
        let error = share(&posts, |p| p.pin.follower_count == "User Info Error");
        assert!((0.66..0.76).contains(&k_share), "k {k_share}");
        assert!((0.14..0.19).contains(&digits), "digits {digits}");
        assert!((0.05..0.09).contains(&m_share), "M {m_share}");
        assert!(
            (0.04..0.08).contains(&error),
            "errors (story rows included) {error}"
        );
        let story = share(&posts, |p| {
            p.pin.is_image_or_video == "multi-video(story page format)"
        });
        assert!((0.03..0.05).contains(&story), "story {story}");
        for (kind, test) in [
            (
                "title placeholder",
                Box::new(|p: &Post| p.pin.title == "No Title Data Available")
                    as Box<dyn Fn(&Post) -> bool>,
            ),
            ("empty title", Box::new(|p: &Post| p.pin.title.is_empty())),
            (
                "non-Latin title",
                Box::new(|p: &Post| {
                    p.pin
                        .title
                        .chars()
                        .any(|c| ('\u{370}'..'\u{500}').contains(&c))
                }),
            ),
            (
                "story description",
                Box::new(|p: &Post| p.pin.description == "No description available Story format"),
            ),
            (
                "no description",
                Box::new(|p: &Post| p.pin.description == "No description available"),
            ),
            (
                "Untitled",
                Box::new(|p: &Post| p.pin.description == "Untitled"),
            ),
            (
                "cut-off description",
                Box::new(|p: &Post| p.pin.description.ends_with("…\u{a0}")),
            ),
            (
                "empty description",
                Box::new(|p: &Post| p.pin.description.is_empty()),
            ),
            (
                "trailing spaces",
                Box::new(|p: &Post| p.pin.poster_name.ends_with(' ')),
            ),
            (
                "emoji",
                Box::new(|p: &Post| p.pin.poster_name.contains('✨')),
            ),
            ("pipe", Box::new(|p: &Post| p.pin.poster_name.contains('|'))),
            (
                "story tags",
                Box::new(|p: &Post| p.pin.tag_list == STORY_TAGS),
            ),
            ("empty tags", Box::new(|p: &Post| p.pin.tag_list.is_empty())),
            (
                "image src error",
                Box::new(|p: &Post| p.pin.image_src == "Image src error."),
            ),
        ] {
            let s = share(&posts, test);
            assert!((0.002..0.30).contains(&s), "{kind}: {s}");
        }
        let categories: std::collections::BTreeSet<&str> =
            posts.iter().map(|p| p.pin.category.as_str()).collect();
        assert_eq!(categories.len(), 13);
        assert!(
            posts
                .iter()
                .all(|p| p.pin.save_location == format!("Local save in /data/{}", p.pin.category))
        );
        let south = share(&posts, |p| p.geo.latitude < -45.0);
        assert!(south > 0.5, "latitudes lean towards -90: {south}");
        let people: std::collections::BTreeSet<(String, String, i64)> = posts
            .iter()
            .map(|p| {
                (
                    p.user.first_name.clone(),
                    p.user.last_name.clone(),
                    p.user.age,
                )
            })
            .collect();
        assert!(
            people.len() < posts.len() / 3,
            "people repeat under many ids: {}",
            people.len()
        );
        assert!(posts.iter().all(|p| (20..=60).contains(&p.user.age)));
        assert!(
            posts
                .iter()
                .all(|p| ("2015".."2018").contains(&&p.user.date_joined[..4]))
        );
        assert!(
            posts
                .iter()
                .all(|p| ("2017-12".."2023").contains(&&p.geo.timestamp[..7]))
        );
    }

    #[test]
    fn rows_have_the_shape_of_the_real_examples() {
        let post = Dataset::new(DatasetSpec::default()).post(10);
        let keys =
            |v: serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        let pin = serde_json::to_string(&post.pin).unwrap();
        let real = r#"{"index": 10794, "unique_id": "c4bd2577-a7bb-4409-bb7a-17d5ed7e1cf1", "title": "TireBuyer", "description": "Nissan GT-R. Sick.", "poster_name": "Ray Uyemura", "follower_count": "437", "tag_list": "Lowrider,Old Vintage Cars,Antique Cars", "is_image_or_video": "image", "image_src": "https://i.pinimg.com/originals/0d/29/9f/0d299f3df020395aa7ce8387f40fbeed.jpg", "downloaded": 1, "save_location": "Local save in /data/vehicles", "category": "vehicles"}"#;
        let source_order = crate::dataset::PIN_COLUMNS;
        let positions: Vec<usize> = source_order
            .iter()
            .map(|f| pin.find(&format!("\"{f}\":")).unwrap())
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "pin fields in source order: {pin}"
        );
        let real_pin: PinRow = serde_json::from_str(real).unwrap();
        assert_eq!(
            keys(serde_json::to_value(&real_pin).unwrap()),
            keys(serde_json::to_value(&post.pin).unwrap())
        );
        let real_geo: GeoRow = serde_json::from_str(r#"{"ind": 7528, "timestamp": "2020-08-28 03:52:47", "latitude": -89.9787, "longitude": -173.293, "country": "Albania"}"#).unwrap();
        let real_user: UserRow = serde_json::from_str(r#"{"ind": 7528, "first_name": "Abigail", "last_name": "Ali", "age": 20, "date_joined": "2015-10-24 11:23:51"}"#).unwrap();
        assert_eq!(post.geo.timestamp.len(), real_geo.timestamp.len());
        assert_eq!(post.user.date_joined.len(), real_user.date_joined.len());
        let iso = Dataset::new(DatasetSpec {
            isoformat: true,
            ..DatasetSpec::default()
        })
        .post(10);
        assert_eq!(&iso.geo.timestamp[10..11], "T");
        assert_eq!(&post.geo.timestamp[10..11], " ");
    }
}
