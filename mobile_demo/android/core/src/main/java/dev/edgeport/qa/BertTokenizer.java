package dev.edgeport.qa;

import java.text.Normalizer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * BERT tokenization as the {@code tokenizers} library does it for a {@code tokenizer.json} with a
 * BertNormalizer, BertPreTokenizer and WordPiece model: clean text, space out CJK ideographs, strip
 * accents (NFD, drop non-spacing marks), lowercase; split on whitespace and punctuation; greedy
 * longest-match-first WordPiece with a {@code ##} continuation prefix.
 *
 * <p>Contract followed: Devlin et al.'s {@code tokenization.py} (BasicTokenizer, WordpieceTokenizer) and
 * huggingface/tokenizers {@code normalizers/bert.rs}, {@code pre_tokenizers/bert.rs},
 * {@code models/wordpiece}. Offsets map each token back to original code points.
 */
public final class BertTokenizer {
    public final Map<String, Integer> vocab;
    public final int unkId;
    public final int clsId;
    public final int sepId;
    public final int padId;
    private final boolean cleanText;
    private final boolean chineseChars;
    private final boolean stripAccents;
    private final boolean lowercase;
    private final String prefix;
    private final int maxWordChars;
    private final String unkToken;

    /**
     * @param vocab token -> id (WordPiece vocabulary)
     * @param lowercase lowercase the text; {@code stripAccents} null means "same as lowercase"
     * @throws IllegalArgumentException when [UNK], [CLS], [SEP] or [PAD] is missing from the vocabulary
     */
    public BertTokenizer(Map<String, Integer> vocab, boolean lowercase, Boolean stripAccents, boolean cleanText,
                         boolean chineseChars, String unkToken, String prefix, int maxWordChars) {
        this.vocab = vocab;
        this.lowercase = lowercase;
        this.stripAccents = stripAccents == null ? lowercase : stripAccents;
        this.cleanText = cleanText;
        this.chineseChars = chineseChars;
        this.unkToken = unkToken;
        this.prefix = prefix;
        this.maxWordChars = maxWordChars;
        this.unkId = require(unkToken);
        this.clsId = require("[CLS]");
        this.sepId = require("[SEP]");
        this.padId = require("[PAD]");
    }

    private int require(String token) {
        Integer id = vocab.get(token);
        if (id == null) throw new IllegalArgumentException("vocabulary has no " + token);
        return id;
    }

    /**
     * Builds the tokenizer from a parsed {@code tokenizer.json}.
     *
     * @throws IllegalArgumentException when its normalizer, pre-tokenizer or model is not the BERT kind
     */
    @SuppressWarnings("unchecked")
    public static BertTokenizer fromTokenizerJson(Map<String, Object> tj) {
        Map<String, Object> norm = (Map<String, Object>) tj.get("normalizer");
        Map<String, Object> pre = (Map<String, Object>) tj.get("pre_tokenizer");
        Map<String, Object> model = (Map<String, Object>) tj.get("model");
        if (norm == null || !"BertNormalizer".equals(norm.get("type")))
            throw new IllegalArgumentException("tokenizer.json: normalizer is not BertNormalizer");
        if (pre == null || !"BertPreTokenizer".equals(pre.get("type")))
            throw new IllegalArgumentException("tokenizer.json: pre_tokenizer is not BertPreTokenizer");
        if (model == null || !"WordPiece".equals(model.get("type")))
            throw new IllegalArgumentException("tokenizer.json: model is not WordPiece");
        Map<String, Integer> vocab = new HashMap<>();
        for (Map.Entry<String, Object> e : ((Map<String, Object>) model.get("vocab")).entrySet())
            vocab.put(e.getKey(), ((Double) e.getValue()).intValue());
        Object strip = norm.get("strip_accents");
        return new BertTokenizer(vocab, Boolean.TRUE.equals(norm.get("lowercase")), (Boolean) strip,
                !Boolean.FALSE.equals(norm.get("clean_text")), !Boolean.FALSE.equals(norm.get("handle_chinese_chars")),
                (String) model.get("unk_token"), (String) model.get("continuing_subword_prefix"),
                ((Double) model.get("max_input_chars_per_word")).intValue());
    }

    /** Tokenizes {@code text} (no special tokens added). */
    public Encoding encode(String text) {
        int[] cps = text.codePoints().toArray();
        List<int[]> norm = normalize(cps);  // [code point, original index]
        List<int[]> words = splitWords(norm);  // [from, to) ranges into norm
        List<Integer> ids = new ArrayList<>();
        List<String> toks = new ArrayList<>();
        List<int[]> spans = new ArrayList<>();
        for (int w = 0; w < words.size(); w++) {
            int[] r = words.get(w);
            wordPiece(norm, r[0], r[1], w, ids, toks, spans);
        }
        int n = ids.size();
        int[] idArr = new int[n], st = new int[n], en = new int[n], wid = new int[n];
        for (int t = 0; t < n; t++) {
            int[] sp = spans.get(t);
            idArr[t] = ids.get(t);
            st[t] = norm.get(sp[0])[1];
            en[t] = norm.get(sp[1] - 1)[1] + 1;
            wid[t] = sp[2];
        }
        return new Encoding(idArr, toks.toArray(new String[0]), st, en, wid);
    }

    /** Normalized code points, each with the index of the original code point it came from. */
    private List<int[]> normalize(int[] cps) {
        List<int[]> out = new ArrayList<>(cps.length);
        for (int k = 0; k < cps.length; k++) {
            int c = cps[k];
            if (cleanText) {
                if (c == 0 || c == 0xFFFD || isControl(c)) continue;
                if (isWhitespace(c)) c = ' ';
            }
            if (chineseChars && isChinese(c)) {
                out.add(new int[] {' ', k});
                out.add(new int[] {c, k});
                out.add(new int[] {' ', k});
                continue;
            }
            String piece = new String(Character.toChars(c));
            if (stripAccents) piece = Normalizer.normalize(piece, Normalizer.Form.NFD);
            if (lowercase) piece = piece.toLowerCase(Locale.ROOT);
            final int orig = k;
            piece.codePoints().forEach(p -> {
                if (!(stripAccents && Character.getType(p) == Character.NON_SPACING_MARK)) out.add(new int[] {p, orig});
            });
        }
        return out;
    }

    /** BertPreTokenizer: drop whitespace, isolate each punctuation character; returns [from, to) ranges. */
    private static List<int[]> splitWords(List<int[]> norm) {
        List<int[]> words = new ArrayList<>();
        int start = -1;
        for (int k = 0; k < norm.size(); k++) {
            int c = norm.get(k)[0];
            if (isWhitespace(c) || isPunctuation(c)) {
                if (start >= 0) words.add(new int[] {start, k});
                start = -1;
                if (isPunctuation(c)) words.add(new int[] {k, k + 1});
            } else if (start < 0) {
                start = k;
            }
        }
        if (start >= 0) words.add(new int[] {start, norm.size()});
        return words;
    }

    /** Greedy longest-match-first WordPiece over norm[from, to); a word with no full match is one [UNK]. */
    private void wordPiece(List<int[]> norm, int from, int to, int word, List<Integer> ids, List<String> toks,
                           List<int[]> spans) {
        if (to - from > maxWordChars) {
            addUnk(from, to, word, ids, toks, spans);
            return;
        }
        int mark = ids.size();
        int s = from;
        while (s < to) {
            int e = to;
            Integer found = null;
            String sub = null;
            while (s < e) {
                sub = (s > from ? prefix : "") + text(norm, s, e);
                found = vocab.get(sub);
                if (found != null) break;
                e--;
            }
            if (found == null) {
                while (ids.size() > mark) {  // roll back this word's pieces
                    ids.remove(ids.size() - 1);
                    toks.remove(toks.size() - 1);
                    spans.remove(spans.size() - 1);
                }
                addUnk(from, to, word, ids, toks, spans);
                return;
            }
            ids.add(found);
            toks.add(sub);
            spans.add(new int[] {s, e, word});
            s = e;
        }
    }

    private void addUnk(int from, int to, int word, List<Integer> ids, List<String> toks, List<int[]> spans) {
        ids.add(unkId);
        toks.add(unkToken);
        spans.add(new int[] {from, to, word});
    }

    private static String text(List<int[]> norm, int from, int to) {
        StringBuilder b = new StringBuilder();
        for (int k = from; k < to; k++) b.appendCodePoint(norm.get(k)[0]);
        return b.toString();
    }

    /** Unicode White_Space (what Rust's char::is_whitespace tests), plus tab, newline, return. */
    static boolean isWhitespace(int c) {
        switch (c) {
            case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
            case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
                return true;
            default:
                return c >= 0x2000 && c <= 0x200A;
        }
    }

    /** Unicode "Other" categories (Cc, Cf, Cs, Co, Cn), tab/newline/return excluded. */
    static boolean isControl(int c) {
        if (c == '\t' || c == '\n' || c == '\r') return false;
        int t = Character.getType(c);
        return t == Character.CONTROL || t == Character.FORMAT || t == Character.SURROGATE
                || t == Character.PRIVATE_USE || t == Character.UNASSIGNED;
    }

    /** ASCII symbols BERT counts as punctuation, and every Unicode P* category. */
    static boolean isPunctuation(int c) {
        if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126))
            return true;
        int t = Character.getType(c);
        return t == Character.CONNECTOR_PUNCTUATION || t == Character.DASH_PUNCTUATION
                || t == Character.START_PUNCTUATION || t == Character.END_PUNCTUATION
                || t == Character.INITIAL_QUOTE_PUNCTUATION || t == Character.FINAL_QUOTE_PUNCTUATION
                || t == Character.OTHER_PUNCTUATION;
    }

    /** CJK Unified Ideograph blocks, as BERT's _is_chinese_char lists them. */
    static boolean isChinese(int c) {
        return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF)
                || (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F)
                || (c >= 0x2B820 && c <= 0x2CEAF) || (c >= 0xF900 && c <= 0xFAFF)
                || (c >= 0x2F800 && c <= 0x2FA1F);
    }
}
