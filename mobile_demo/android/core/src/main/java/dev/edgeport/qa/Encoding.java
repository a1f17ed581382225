package dev.edgeport.qa;

/**
 * One tokenized text (no special tokens), as the {@code tokenizers} library's Encoding gives it.
 *
 * <p>All arrays have one entry per token. Offsets are in Unicode code points of the original text
 * (Python's {@code str} indices), half-open {@code [start, end)}. {@code wordIds[t]} is the index of the
 * pre-tokenized word the token came from (whitespace- and punctuation-split, as BertPreTokenizer splits).
 */
public final class Encoding {
    public final int[] ids;
    public final String[] tokens;
    public final int[] start;
    public final int[] end;
    public final int[] wordIds;

    public Encoding(int[] ids, String[] tokens, int[] start, int[] end, int[] wordIds) {
        this.ids = ids;
        this.tokens = tokens;
        this.start = start;
        this.end = end;
        this.wordIds = wordIds;
    }

    /** Number of tokens. */
    public int size() {
        return ids.length;
    }
}
