// BERT tokenization as the `tokenizers` library does it for a tokenizer.json with a BertNormalizer,
// BertPreTokenizer and WordPiece model (a port of the Java core's BertTokenizer).
// Contract: Devlin et al.'s tokenization.py and huggingface/tokenizers normalizers/bert.rs,
// pre_tokenizers/bert.rs, models/wordpiece. Offsets are in Unicode code points of the original text.

const WHITESPACE = new Set([0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x85, 0xa0, 0x1680, 0x2028, 0x2029, 0x202f,
  0x205f, 0x3000]);
const OTHER = /\p{C}/u;  // Cc, Cf, Cs, Co, Cn
const PUNCT = /\p{P}/u;
const NONSPACING_MARK = /\p{Mn}/u;

/** Unicode White_Space (Rust's char::is_whitespace). */
export function isWhitespace(c) {
  return WHITESPACE.has(c) || (c >= 0x2000 && c <= 0x200a);
}

/** Unicode "Other" categories, tab/newline/return excluded. */
export function isControl(c) {
  if (c === 9 || c === 10 || c === 13) return false;
  return OTHER.test(String.fromCodePoint(c));
}

/** ASCII symbols BERT counts as punctuation, and every Unicode P* category. */
export function isPunctuation(c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
  return PUNCT.test(String.fromCodePoint(c));
}

/** CJK Unified Ideograph blocks, as BERT's _is_chinese_char lists them. */
export function isChinese(c) {
  return (c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) || (c >= 0x20000 && c <= 0x2a6df) ||
    (c >= 0x2a700 && c <= 0x2b73f) || (c >= 0x2b740 && c <= 0x2b81f) || (c >= 0x2b820 && c <= 0x2ceaf) ||
    (c >= 0xf900 && c <= 0xfaff) || (c >= 0x2f800 && c <= 0x2fa1f);
}

/** The code points of a string, as numbers. */
export function codePoints(text) {
  return Array.from(text, (ch) => ch.codePointAt(0));
}

export class BertTokenizer {
  /**
   * @param {Map<string, number>} vocab WordPiece vocabulary
   * @param {object} opts {lowercase, stripAccents (null: as lowercase), cleanText, chineseChars, unkToken,
   *   prefix, maxWordChars}
   * @throws {Error} when [UNK], [CLS], [SEP] or [PAD] is not in the vocabulary
   */
  constructor(vocab, opts) {
    this.vocab = vocab;
    this.lowercase = opts.lowercase;
    this.stripAccents = opts.stripAccents ?? opts.lowercase;
    this.cleanText = opts.cleanText;
    this.chineseChars = opts.chineseChars;
    this.unkToken = opts.unkToken;
    this.prefix = opts.prefix;
    this.maxWordChars = opts.maxWordChars;
    const need = (t) => {
      if (!vocab.has(t)) throw new Error(`vocabulary has no ${t}`);
      return vocab.get(t);
    };
    this.unkId = need(this.unkToken);
    this.clsId = need('[CLS]');
    this.sepId = need('[SEP]');
    this.padId = need('[PAD]');
  }

  /**
   * From a parsed tokenizer.json.
   * @throws {Error} when its normalizer, pre-tokenizer or model is not the BERT kind
   */
  static fromTokenizerJson(tj) {
    const norm = tj.normalizer, pre = tj.pre_tokenizer, model = tj.model;
    if (!norm || norm.type !== 'BertNormalizer') throw new Error('tokenizer.json: normalizer is not BertNormalizer');
    if (!pre || pre.type !== 'BertPreTokenizer') throw new Error('tokenizer.json: pre_tokenizer is not BertPreTokenizer');
    if (!model || model.type !== 'WordPiece') throw new Error('tokenizer.json: model is not WordPiece');
    return new BertTokenizer(new Map(Object.entries(model.vocab)), {
      lowercase: norm.lowercase === true, stripAccents: norm.strip_accents ?? null,
      cleanText: norm.clean_text !== false, chineseChars: norm.handle_chinese_chars !== false,
      unkToken: model.unk_token, prefix: model.continuing_subword_prefix,
      maxWordChars: model.max_input_chars_per_word,
    });
  }

  /**
   * Tokenizes text, no special tokens.
   * @returns {{ids: number[], tokens: string[], start: number[], end: number[], wordIds: number[]}}
   *   code-point offsets [start, end) into `text`; wordIds index the whitespace/punctuation-split words
   */
  encode(text) {
    const norm = this.normalize(codePoints(text));
    const out = {ids: [], tokens: [], start: [], end: [], wordIds: []};
    splitWords(norm).forEach(([from, to], w) => this.wordPiece(norm, from, to, w, out));
    return out;
  }

  /** Normalized code points, each as [code point, index of the original code point]. */
  normalize(cps) {
    const out = [];
    cps.forEach((c0, k) => {
      let c = c0;
      if (this.cleanText) {
        if (c === 0 || c === 0xfffd || isControl(c)) return;
        if (isWhitespace(c)) c = 0x20;
      }
      if (this.chineseChars && isChinese(c)) {
        out.push([0x20, k], [c, k], [0x20, k]);
        return;
      }
      let piece = String.fromCodePoint(c);
      if (this.stripAccents) piece = piece.normalize('NFD');
      if (this.lowercase) piece = piece.toLowerCase();
      for (const ch of piece) {
        if (!(this.stripAccents && NONSPACING_MARK.test(ch))) out.push([ch.codePointAt(0), k]);
      }
    });
    return out;
  }

  /** Greedy longest-match-first WordPiece over norm[from, to); no full match: one [UNK] for the word. */
  wordPiece(norm, from, to, word, out) {
    const pieces = [];
    if (to - from <= this.maxWordChars) {
      let s = from;
      while (s < to) {
        let e = to, id;
        let sub;
        for (; s < e; e--) {
          sub = (s > from ? this.prefix : '') + String.fromCodePoint(...norm.slice(s, e).map((p) => p[0]));
          id = this.vocab.get(sub);
          if (id !== undefined) break;
        }
        if (id === undefined) break;
        pieces.push([id, sub, s, e]);
        s = e;
        if (s === to) {
          for (const p of pieces) push(out, p, norm, word);
          return;
        }
      }
    }
    push(out, [this.unkId, this.unkToken, from, to], norm, word);
  }
}

function push(out, [id, token, s, e], norm, word) {
  out.ids.push(id);
  out.tokens.push(token);
  out.start.push(norm[s][1]);
  out.end.push(norm[e - 1][1] + 1);
  out.wordIds.push(word);
}

/** BertPreTokenizer: drop whitespace, isolate each punctuation character; [from, to) ranges. */
function splitWords(norm) {
  const words = [];
  let start = -1;
  norm.forEach(([c], k) => {
    const ws = isWhitespace(c), punct = isPunctuation(c);
    if (ws || punct) {
      if (start >= 0) words.push([start, k]);
      start = -1;
      if (punct) words.push([k, k + 1]);
    } else if (start < 0) {
      start = k;
    }
  });
  if (start >= 0) words.push([start, norm.length]);
  return words;
}
