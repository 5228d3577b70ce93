"""Synthesise a small LibriSpeech-shaped English corpus offline with espeak-ng and sox.

Sentences come from a seeded template grammar over a closed vocabulary of about 370 upper-case
words (letters, space and apostrophe only), so that an n-gram LM estimated on other sentences
of the same grammar helps decoding. Each "speaker" is an espeak-ng voice (base voice plus
variant) with its own speaking rate (``-s``) and pitch (``-p``). Dev and test speakers are
held out: their voice/variant pairs occur neither in train-clean-100 nor in the pre-training
set, though every base voice and every variant does.

Four disjoint sentence sets are drawn: test-clean, dev-clean, train-clean-100 and a larger
pre-training set (3000 sentences drawn with the others, then ``--n-extra`` more drawn after the
splits are written and spoken by more voices: extra espeak-ng variants and base voices, never a
dev or test pair). The first three are written in the LibriSpeech layout::

    OUT/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac
    OUT/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt
    OUT/LibriSpeech/SPEAKERS.TXT

The pre-training set (for tools/embedded/pretrain_seed_encoder.py and
tools/embedded/build_lm.sh, not shipped) goes to ``PRETRAIN_DIR/audio/*.flac`` with
``PRETRAIN_DIR/manifest.tsv`` (path, duration, text) and ``PRETRAIN_DIR/text.txt`` (one
sentence a line); the sentences are also written to ``embedded/pretrain_sentences.tsv`` with
their voice, rate and pitch (shipped, text only). Audio is 16 kHz mono 16-bit FLAC, made with
``espeak-ng -v V -s R -p P --stdout TEXT | sox -q -D -v 0.8 -t wav - -r 16000 -c 1 -b 16
out.flac`` (``-D`` turns dithering off, which makes the output byte-for-byte reproducible). The
output is a function of the seed and the installed espeak-ng and sox.

Usage: python tools/embedded/make_synthetic_corpus.py [--out embedded] [--pretrain-dir
embedded/.cache/pretrain] [--seed 1986] [--n-pretrain 3000] [--n-extra 9000] [--jobs 2]
"""

import argparse
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile

PERSONS = (
    "MAN WOMAN BOY GIRL CHILD FARMER KING QUEEN SOLDIER SAILOR DOCTOR TEACHER PRIEST CAPTAIN "
    "STRANGER MERCHANT HUNTER FISHERMAN SHEPHERD BAKER NURSE WIDOW SERVANT PRINCE MILLER "
    "TAILOR JUDGE THIEF"
).split()
ANIMALS = "DOG CAT HORSE BIRD FOX WOLF SHEEP COW GOAT MOUSE OWL RABBIT".split()
PERSON_ADJS = (
    "OLD YOUNG TALL LITTLE QUIET ANGRY HAPPY TIRED BRAVE CLEVER GENTLE HUNGRY PROUD LONELY "
    "POOR RICH WISE KIND HONEST FOOLISH STRONG NERVOUS CHEERFUL FRIENDLY"
).split()
PLACES = (
    "RIVER FOREST VILLAGE CHURCH MARKET CASTLE GARDEN HILL SHORE BRIDGE ROAD HOUSE TOWN CITY "
    "FIELD MOUNTAIN VALLEY LAKE HARBOUR INN MILL STATION SCHOOL PALACE FARM BARN TOWER "
    "MEADOW ISLAND CAVE GATE KITCHEN"
).split()
PLACE_ADJS = (
    "DARK EMPTY COLD WARM DISTANT NARROW WIDE ANCIENT GREEN BUSY DEEP MUDDY FROZEN HIDDEN "
    "NEAREST NORTHERN SOUTHERN GREAT PEACEFUL OLD QUIET"
).split()
STATES = "COLD DARK EMPTY QUIET WARM CROWDED SAFE DANGEROUS NOISY LOVELY STRANGE".split()
WEATHER = "COLD WARM DARK WINDY FOGGY HOT WET CALM BRIGHT STORMY".split()
OBJECTS = (
    "LETTER BOOK KEY LAMP LOAF CUP SWORD COAT HAT BASKET BOX RING CANDLE KNIFE ROPE BOTTLE "
    "MAP PURSE STICK BLANKET BELL CHAIR BOAT CART APPLE BAG SHOE PEN PLATE COIN CLOCK LADDER"
).split()
OBJECT_ADJS = (
    "HEAVY BROKEN NEW RED BLUE GOLDEN SILVER WOODEN WHITE BLACK BROWN TINY RUSTY PRECIOUS "
    "CHEAP DIRTY OLD"
).split()
MOTION_VERBS = (
    "WALKED RAN RODE SAILED HURRIED WANDERED RETURNED CAME WENT CLIMBED TRAVELLED MARCHED "
    "CRAWLED DROVE RUSHED STROLLED FLED SWAM"
).split()
MOTION_PREPS = "TO TOWARD INTO ACROSS THROUGH ALONG PAST UP DOWN AROUND BEYOND".split()
TRANSITIVE = {  # past tense: bare form
    "FOUND": "FIND", "SAW": "SEE", "CARRIED": "CARRY", "LOST": "LOSE", "BROUGHT": "BRING",
    "OPENED": "OPEN", "HELD": "HOLD", "DROPPED": "DROP", "BOUGHT": "BUY", "SOLD": "SELL",
    "TOOK": "TAKE", "HID": "HIDE", "MENDED": "MEND", "WASHED": "WASH", "PAINTED": "PAINT",
    "STOLE": "STEAL", "BURIED": "BURY", "FILLED": "FILL", "CLEANED": "CLEAN", "KEPT": "KEEP",
    "FETCHED": "FETCH", "NOTICED": "NOTICE", "WANTED": "WANT", "SHOWED": "SHOW",
}
STATIVE_VERBS = "SLEPT SAT WAITED STOOD LAY RESTED PLAYED STAYED HID".split()
LOCATIVE_PREPS = "IN NEAR BY BEHIND BESIDE UNDER AT OUTSIDE INSIDE ABOVE BELOW".split()
REACTIONS = "SMILED LAUGHED SIGHED FROWNED NODDED WEPT SHOUTED WHISPERED".split()
NAMES = (
    "JOHN MARY THOMAS ANNE WILLIAM MARGARET HENRY ELIZABETH JAMES SARAH ROBERT ALICE GEORGE "
    "EMMA PETER HELEN"
).split()
PRONOUNS = "HE SHE THEY WE I YOU".split()
NEGATIONS = "DIDN'T COULDN'T WOULDN'T CAN'T WON'T SHOULDN'T".split()
TIMES = [
    phrase.split()
    for phrase in (
        "IN THE MORNING", "IN THE EVENING", "IN THE AFTERNOON", "AT NIGHT", "AT DAWN",
        "AT NOON", "BEFORE DAWN", "AFTER SUPPER", "AFTER DINNER", "BEFORE BREAKFAST",
        "ON SUNDAY", "ON MONDAY", "ON TUESDAY", "ON WEDNESDAY", "ON THURSDAY", "ON FRIDAY",
        "ON SATURDAY", "LAST WINTER", "LAST SUMMER", "LAST SPRING", "LAST AUTUMN",
        "THAT NIGHT", "THE NEXT DAY", "YESTERDAY", "TODAY", "SOON AFTER", "AT LAST",
        "EARLY THAT MORNING", "LATE IN THE EVENING", "LAST WEEK", "NEXT MONTH", "ONCE AGAIN",
    )
]
ADVERBS = "SLOWLY QUICKLY QUIETLY CAREFULLY SADLY GLADLY BACK SAFELY".split()
PERSON_DETS = "THE THE THE A THAT ONE MY HIS HER OUR THEIR".split()
OBJECT_DETS = "THE THE THE A HIS HER MY YOUR THEIR OUR THAT THIS".split()
QUESTION_WORDS = "WHERE WHY WHEN HOW".split()

SPLITS = (  # name, sentences, speakers, chapters per speaker
    ("test-clean", 45, 4, 1),
    ("dev-clean", 45, 4, 1),
    ("train-clean-100", 260, 12, 2),
)
BASE_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
VARIANTS = ("", "+f2", "+f3", "+f4", "+m1", "+m3", "+m5", "+m7")
# Heard only in the extra pre-training utterances (more voices for the seed encoder); the
# dev and test speakers are pairs of BASE_VOICES and VARIANTS, so none of these is one of them.
EXTRA_BASE_VOICES = ("en-gb-x-gbclan", "en-gb-x-gbcwmd")
EXTRA_VARIANTS = ("+f1", "+f5", "+m2", "+m4", "+m6", "+m8", "+klatt", "+klatt3", "+Andy",
                  "+Annie", "+Linda", "+Michael", "+Steph", "+Zac", "+grandma", "+grandpa")
RATES = (150, 210)  # words per minute, espeak-ng -s
PITCHES = (30, 70)  # espeak-ng -p
MIN_WORDS, MAX_WORDS = 5, 12


@dataclass(frozen=True)
class Speaker:
    """An espeak-ng voice setting that plays the role of one speaker.

    Attributes
    ----------
    voice : str
        Base voice plus variant, as passed to ``espeak-ng -v`` (e.g. ``en-gb+f3``).
    rate : int
        Speaking rate in words per minute (``-s``).
    pitch : int
        Pitch, 0-99 (``-p``).
    """

    voice: str
    rate: int
    pitch: int

    @property
    def sex(self):
        """str: ``F`` for female variants, else ``M`` (as in LibriSpeech's SPEAKERS.TXT)."""
        return "F" if "+f" in self.voice else "M"


def with_article(words):
    """Turn a leading ``A`` into ``AN`` before a vowel sound.

    Parameters
    ----------
    words : list of str
        A phrase whose first word may be the article ``A``.

    Returns
    -------
    list of str
        The phrase with the right indefinite article.
    """
    if words[0] == "A" and (words[1][0] in "AEIO" or words[1] == "HONEST"):
        return ["AN"] + words[1:]
    return words


def noun_phrase(rng, nouns, adjectives, determiners, p_adjective=0.5):
    """Draw a determiner, an optional adjective and a noun.

    Parameters
    ----------
    rng : random.Random
        The random generator.
    nouns, adjectives, determiners : sequence of str
        The words to draw from.
    p_adjective : float
        Probability of an adjective.

    Returns
    -------
    list of str
        The phrase.
    """
    words = [rng.choice(determiners)]
    if rng.random() < p_adjective:
        words.append(rng.choice(adjectives))
    words.append(rng.choice(nouns))
    return with_article(words)


def person(rng):
    """Draw a person: a name or a noun phrase such as ``THE OLD FARMER``."""
    if rng.random() < 0.25:
        return [rng.choice(NAMES)]
    return noun_phrase(rng, PERSONS, PERSON_ADJS, PERSON_DETS)


def place(rng, p_adjective=0.4):
    """Draw a definite place such as ``THE NARROW BRIDGE``."""
    return noun_phrase(rng, PLACES, PLACE_ADJS, ["THE"], p_adjective)


def thing(rng, p_adjective=0.5):
    """Draw an object noun phrase such as ``HER RUSTY KEY``."""
    return noun_phrase(rng, OBJECTS, OBJECT_ADJS, OBJECT_DETS, p_adjective)


def maybe_time(rng, p=0.4):
    """Draw a time phrase with probability ``p``, else nothing."""
    return rng.choice(TIMES) if rng.random() < p else []


def make_sentence(rng):
    """Draw one sentence from the template grammar.

    Parameters
    ----------
    rng : random.Random
        The random generator.

    Returns
    -------
    str
        An upper-case sentence; its length is not yet checked.
    """
    template = rng.randrange(12)
    if template == 0:  # THE OLD MAN WALKED SLOWLY TO THE RIVER AT DAWN
        adverb = [rng.choice(ADVERBS)] if rng.random() < 0.3 else []
        words = (person(rng) + [rng.choice(MOTION_VERBS)] + adverb
                 + [rng.choice(MOTION_PREPS)] + place(rng) + maybe_time(rng))
    elif template == 1:  # THE BAKER FOUND A GOLDEN RING NEAR THE MILL
        where = [rng.choice(LOCATIVE_PREPS)] + place(rng, 0.2) if rng.random() < 0.5 else []
        words = person(rng) + [rng.choice(list(TRANSITIVE))] + thing(rng) + where
    elif template == 2:  # THE LITTLE DOG SLEPT BEHIND THE BARN AT NIGHT
        animal = noun_phrase(rng, ANIMALS, PERSON_ADJS, PERSON_DETS, 0.4)
        words = (animal + [rng.choice(STATIVE_VERBS), rng.choice(LOCATIVE_PREPS)]
                 + place(rng) + maybe_time(rng))
    elif template == 3:  # THE SAILOR SAID THAT THE HARBOUR WAS VERY QUIET
        very = ["VERY"] if rng.random() < 0.3 else []
        words = (person(rng) + ["SAID", "THAT"] + place(rng, 0.2) + ["WAS"] + very
                 + [rng.choice(STATES)] + maybe_time(rng, 0.3))
    elif template == 4:  # SHE COULDN'T FIND THE KEY THAT NIGHT
        words = ([rng.choice(PRONOUNS), rng.choice(NEGATIONS),
                  TRANSITIVE[rng.choice(list(TRANSITIVE))]] + thing(rng) + maybe_time(rng))
    elif template == 5:  # JOHN GAVE THE OLD WOMAN A LOAF
        words = ([rng.choice(NAMES), "GAVE"]
                 + noun_phrase(rng, PERSONS, PERSON_ADJS, ["THE", "HIS", "HER"], 0.4)
                 + thing(rng, 0.4) + maybe_time(rng, 0.3))
    elif template == 6:  # MARY'S LITTLE DOG WAS NEAR THE GATE
        owner = rng.choice(NAMES) + "'S"
        nouns, adjectives = (ANIMALS, PERSON_ADJS) if rng.random() < 0.5 else (OBJECTS, OBJECT_ADJS)
        owned = ([rng.choice(adjectives)] if rng.random() < 0.5 else []) + [rng.choice(nouns)]
        words = [owner] + owned + ["WAS", rng.choice(LOCATIVE_PREPS)] + place(rng) + maybe_time(rng)
    elif template == 7:  # IT WAS VERY COLD IN THE VALLEY THAT NIGHT
        very = ["VERY"] if rng.random() < 0.4 else []
        where = ["IN"] + place(rng, 0.2) if rng.random() < 0.6 else []
        words = ["IT", "WAS"] + very + [rng.choice(WEATHER)] + where + maybe_time(rng, 0.7)
    elif template == 8:  # THE KING AND THE CAPTAIN RODE ACROSS THE BRIDGE
        words = (person(rng) + ["AND"] + person(rng) + [rng.choice(MOTION_VERBS)]
                 + [rng.choice(MOTION_PREPS)] + place(rng, 0.3) + maybe_time(rng, 0.3))
    elif template == 9:  # WHERE DID THE STRANGER HIDE THE LETTER
        words = ([rng.choice(QUESTION_WORDS), "DID"] + person(rng)
                 + [TRANSITIVE[rng.choice(list(TRANSITIVE))]] + thing(rng) + maybe_time(rng, 0.2))
    elif template == 10:  # THERE WAS A TIRED SOLDIER IN THE INN
        someone = noun_phrase(rng, PERSONS + ANIMALS, PERSON_ADJS, ["A"], 0.6)
        words = (["THERE", "WAS"] + someone + [rng.choice(LOCATIVE_PREPS)] + place(rng)
                 + maybe_time(rng, 0.3))
    else:  # THE TEACHER LOOKED AT THE OLD CLOCK AND SIGHED
        words = person(rng) + ["LOOKED", "AT"] + thing(rng) + ["AND", rng.choice(REACTIONS)]
    return " ".join(words)


def draw_sentences(rng, count):
    """Draw distinct sentences of ``MIN_WORDS`` to ``MAX_WORDS`` words.

    Parameters
    ----------
    rng : random.Random
        The random generator.
    count : int
        Number of distinct sentences.

    Returns
    -------
    list of str
        Distinct sentences in drawing order.
    """
    seen, sentences = set(), []
    while len(sentences) < count:
        sentence = make_sentence(rng)
        if MIN_WORDS <= len(sentence.split()) <= MAX_WORDS and sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    return sentences


def speaker_pools(rng):
    """Split the voice/variant pairs into held-out ones (dev and test) and the rest.

    Parameters
    ----------
    rng : random.Random
        The random generator.

    Returns
    -------
    dict
        ``{"test-clean": [...], "dev-clean": [...], "train-clean-100": [...]}`` lists of
        voice strings; the train list also serves the pre-training set.
    """
    pairs = [base + variant for base in BASE_VOICES for variant in VARIANTS]
    rng.shuffle(pairs)
    n_test, n_dev = SPLITS[0][2], SPLITS[1][2]
    return {
        "test-clean": pairs[:n_test],
        "dev-clean": pairs[n_test:n_test + n_dev],
        "train-clean-100": pairs[n_test + n_dev:],
    }


def extra_pretrain_voices(held_out):
    """Return the voices of the extra pre-training utterances.

    Parameters
    ----------
    held_out : collection of str
        The dev and test voice/variant pairs, never returned.

    Returns
    -------
    list of str
        Every pair of a base voice (``BASE_VOICES`` and ``EXTRA_BASE_VOICES``) and a variant
        (``VARIANTS`` and ``EXTRA_VARIANTS``) except the held-out ones.
    """
    pairs = [base + variant for base in BASE_VOICES + EXTRA_BASE_VOICES
             for variant in VARIANTS + EXTRA_VARIANTS]
    return [pair for pair in pairs if pair not in set(held_out)]


def random_speaker(rng, voices):
    """Draw a speaker: a voice from ``voices`` with a random rate and pitch."""
    return Speaker(rng.choice(voices), rng.randint(*RATES), rng.randint(*PITCHES))


def synthesise(text, speaker, path):
    """Synthesise ``text`` with espeak-ng and write it as 16 kHz mono 16-bit FLAC.

    Parameters
    ----------
    text : str
        The sentence.
    speaker : Speaker
        The voice, rate and pitch.
    path : pathlib.Path
        The output FLAC file.

    Returns
    -------
    float
        The duration in seconds.
    """
    espeak = subprocess.run(
        ["espeak-ng", "-v", speaker.voice, "-s", str(speaker.rate), "-p", str(speaker.pitch),
         "--stdout", text],
        check=True, capture_output=True,
    )
    subprocess.run(
        ["sox", "-q", "-D", "-v", "0.8", "-t", "wav", "-", "-r", "16000", "-c", "1", "-b", "16",
         str(path)],
        input=espeak.stdout, check=True,
    )
    return soundfile.info(str(path)).duration


def run_jobs(jobs, n_workers):
    """Synthesise ``(text, speaker, path)`` jobs in parallel and return their durations."""
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        return list(pool.map(lambda job: synthesise(*job), jobs))


def write_split(root, name, sentences, voices, n_speakers, n_chapters, ids, rng, n_workers):
    """Write one split in the LibriSpeech layout.

    Parameters
    ----------
    root : pathlib.Path
        The ``LibriSpeech`` folder.
    name : str
        The split name, e.g. ``dev-clean``.
    sentences : list of str
        The split's sentences, spread evenly over speakers and chapters.
    voices : list of str
        The voice/variant pairs this split's speakers are drawn from, one each.
    n_speakers, n_chapters : int
        Number of speakers, and of chapters per speaker.
    ids : dict
        ``{"speaker": iterator, "chapter": iterator}`` of fresh numeric ids.
    rng : random.Random
        The random generator (rates and pitches).
    n_workers : int
        Parallel synthesis processes.

    Returns
    -------
    list of tuple
        ``(speaker_id, split, minutes, speaker)`` rows for SPEAKERS.TXT.
    """
    split_dir = root / name
    jobs, rows, per_speaker = [], [], []
    groups = [sentences[i::n_speakers * n_chapters] for i in range(n_speakers * n_chapters)]
    for s in range(n_speakers):
        speaker = Speaker(voices[s], rng.randint(*RATES), rng.randint(*PITCHES))
        speaker_id = next(ids["speaker"])
        first_job = len(jobs)
        for c in range(n_chapters):
            chapter_id = next(ids["chapter"])
            chapter_dir = split_dir / str(speaker_id) / str(chapter_id)
            chapter_dir.mkdir(parents=True)
            lines = []
            for u, text in enumerate(groups[s * n_chapters + c]):
                utt_id = f"{speaker_id}-{chapter_id}-{u:04d}"
                lines.append(f"{utt_id} {text}\n")
                jobs.append((text, speaker, chapter_dir / f"{utt_id}.flac"))
            (chapter_dir / f"{speaker_id}-{chapter_id}.trans.txt").write_text("".join(lines))
        per_speaker.append((speaker_id, speaker, first_job, len(jobs)))
    durations = run_jobs(jobs, n_workers)
    for speaker_id, speaker, start, end in per_speaker:
        rows.append((speaker_id, name, sum(durations[start:end]) / 60, speaker))
    print(f"{name}: {len(jobs)} utterances, {n_speakers} speakers, {sum(durations):.0f} s")
    return rows


def write_pretrain(pretrain_dir, sentences, voice_pools, rng, n_workers):
    """Write the pre-training set: flat FLAC files, a manifest and a text file.

    Parameters
    ----------
    pretrain_dir : pathlib.Path
        The output folder (replaced).
    sentences : list of str
        The pre-training sentences.
    voice_pools : list of list of str
        For each sentence, the voice/variant pairs allowed (never those of dev or test
        speakers).
    rng : random.Random
        The random generator; each utterance gets its own voice, rate and pitch.
    n_workers : int
        Parallel synthesis processes.

    Returns
    -------
    list of Speaker
        The speaker of each sentence.
    """
    audio_dir = pretrain_dir / "audio"
    audio_dir.mkdir(parents=True)
    jobs = [(text, random_speaker(rng, voices), audio_dir / f"pretrain-{i:05d}.flac")
            for i, (text, voices) in enumerate(zip(sentences, voice_pools, strict=True))]
    durations = run_jobs(jobs, n_workers)
    with open(pretrain_dir / "manifest.tsv", "w") as manifest:
        manifest.write("path\tduration\tvoice\trate\tpitch\ttext\n")
        for (text, speaker, path), duration in zip(jobs, durations, strict=True):
            manifest.write(f"{path.relative_to(pretrain_dir)}\t{duration:.3f}\t{speaker.voice}"
                           f"\t{speaker.rate}\t{speaker.pitch}\t{text}\n")
    (pretrain_dir / "text.txt").write_text("".join(s + "\n" for s in sentences))
    print(f"pre-training: {len(jobs)} utterances, {sum(durations):.0f} s")
    return [speaker for _, speaker, _ in jobs]


def write_sentence_list(path, sentences, speakers):
    """Write the shipped list of pre-training sentences and who speaks them (no audio).

    Parameters
    ----------
    path : pathlib.Path
        The TSV file (columns ``voice``, ``rate``, ``pitch``, ``text``).
    sentences : list of str
        The pre-training sentences.
    speakers : list of Speaker
        Their speakers.
    """
    lines = ["voice\trate\tpitch\ttext\n"]
    lines += [f"{speaker.voice}\t{speaker.rate}\t{speaker.pitch}\t{text}\n"
              for text, speaker in zip(sentences, speakers, strict=True)]
    path.write_text("".join(lines))


def write_speakers_file(root, rows):
    """Write a LibriSpeech-style ``SPEAKERS.TXT`` naming each speaker's espeak-ng setting."""
    lines = [
        "; Synthetic speakers: espeak-ng voice (-v), rate (-s) and pitch (-p).\n",
        ";ID  |SEX| SUBSET           |MINUTES| NAME\n",
    ]
    for speaker_id, split, minutes, speaker in sorted(rows):
        lines.append(f"{speaker_id:<5}| {speaker.sex} | {split:<17}| {minutes:5.2f} | "
                     f"{speaker.voice} -s {speaker.rate} -p {speaker.pitch}\n")
    (root / "SPEAKERS.TXT").write_text("".join(lines))


def fresh_ids(rng):
    """Draw distinct speaker and chapter ids of LibriSpeech-like magnitudes.

    Parameters
    ----------
    rng : random.Random
        The random generator.

    Returns
    -------
    dict
        ``{"speaker": iterator, "chapter": iterator}`` of distinct integers.
    """
    n_speakers = sum(n for _, _, n, _ in SPLITS)
    n_chapters = sum(n * c for _, _, n, c in SPLITS)
    return {
        "speaker": iter(rng.sample(range(19, 9000), n_speakers)),
        "chapter": iter(rng.sample(range(1000, 200000), n_chapters)),
    }


def main():
    """Parse the command line and write the corpus."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("embedded"),
                        help="folder that receives LibriSpeech/ (default: embedded)")
    parser.add_argument("--pretrain-dir", type=Path, default=Path("embedded/.cache/pretrain"),
                        help="folder for the pre-training set (default: embedded/.cache/pretrain)")
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument("--n-pretrain", type=int, default=3000,
                        help="number of pre-training sentences (default: 3000)")
    parser.add_argument("--n-extra", type=int, default=9000,
                        help="extra pre-training sentences, drawn after the splits are written "
                             "(so these stay as they were) and spoken by more voices "
                             "(default: 9000)")
    parser.add_argument("--sentence-list", type=Path,
                        default=Path("embedded/pretrain_sentences.tsv"),
                        help="where the pre-training sentences are also written (shipped, for "
                             "the LM and the leakage test)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel synthesis processes")
    args = parser.parse_args()
    # Check the synthesisers before anything is deleted: the splits are rewritten in place.
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        parser.error(f"{' and '.join(missing)} not found on PATH; install them (Debian: "
                     "apt-get install espeak-ng sox flac libsox-fmt-all); nothing was changed")

    rng = random.Random(args.seed)
    n_eval = sum(n for _, n, _, _ in SPLITS)
    sentences = draw_sentences(rng, n_eval + args.n_pretrain)
    pools = speaker_pools(rng)
    ids = fresh_ids(rng)

    root = args.out / "LibriSpeech"
    rows, start = [], 0
    for name, count, n_speakers, n_chapters in SPLITS:
        shutil.rmtree(root / name, ignore_errors=True)
        rows += write_split(root, name, sentences[start:start + count], pools[name],
                            n_speakers, n_chapters, ids, rng, args.jobs)
        start += count
    write_speakers_file(root, rows)

    # Extra sentences come from the same generator after the splits, so that adding them
    # changes no shipped file; they avoid every sentence drawn so far.
    pretrain = sentences[start:]
    extra, seen = [], set(sentences)
    while len(extra) < args.n_extra:
        for sentence in draw_sentences(rng, args.n_extra - len(extra)):
            if sentence not in seen:
                seen.add(sentence)
                extra.append(sentence)
    held_out = pools["test-clean"] + pools["dev-clean"]
    voice_pools = ([pools["train-clean-100"]] * len(pretrain)
                   + [extra_pretrain_voices(held_out)] * len(extra))
    shutil.rmtree(args.pretrain_dir, ignore_errors=True)
    speakers = write_pretrain(args.pretrain_dir, pretrain + extra, voice_pools, rng, args.jobs)
    write_sentence_list(args.sentence_list, pretrain + extra, speakers)
    print(f"pre-training sentences and voices listed in {args.sentence_list}")

    vocabulary = {word for sentence in sentences + extra for word in sentence.split()}
    print(f"vocabulary: {len(vocabulary)} words over all sets")


if __name__ == "__main__":
    main()
