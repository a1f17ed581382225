package dev.edgeport.qa;

/**
 * One model input window over a (question, context) pair: {@code [CLS] question [SEP] context-window [SEP]}
 * padded to the artifact's static length.
 *
 * <p>Arrays have length {@code maxSeqLen}. For context positions {@code charStart/charEnd} are the token's
 * code-point offsets in the context and {@code wordIds} its context word index; elsewhere all three are -1.
 */
public final class Feature {
    public final int[] inputIds;
    public final int[] tokenTypeIds;
    public final int[] attentionMask;
    public final int[] charStart;
    public final int[] charEnd;
    public final int[] wordIds;

    Feature(int maxSeqLen) {
        inputIds = new int[maxSeqLen];
        tokenTypeIds = new int[maxSeqLen];
        attentionMask = new int[maxSeqLen];
        charStart = new int[maxSeqLen];
        charEnd = new int[maxSeqLen];
        wordIds = new int[maxSeqLen];
        java.util.Arrays.fill(charStart, -1);
        java.util.Arrays.fill(charEnd, -1);
        java.util.Arrays.fill(wordIds, -1);
    }

    /** True where the position holds a context token (an answer may start or end there). */
    public boolean isContext(int pos) {
        return wordIds[pos] >= 0;
    }

    /** Sequence length. */
    public int length() {
        return inputIds.length;
    }
}
