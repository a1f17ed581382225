package dev.edgeport.qa;

/**
 * One answer: {@code text} is {@code context[start, end)} in code points; {@code score} is the product of
 * the softmax start and end probabilities (transformers' question-answering pipeline score). The null
 * answer (no answer in the passage) has empty text and start = end = 0.
 */
public final class Answer {
    public final String text;
    public final int start;
    public final int end;
    public final double score;

    public Answer(String text, int start, int end, double score) {
        this.text = text;
        this.start = start;
        this.end = end;
        this.score = score;
    }

    @Override
    public String toString() {
        return String.format(java.util.Locale.ROOT, "%s [%d,%d) %.4f", text, start, end, score);
    }
}
