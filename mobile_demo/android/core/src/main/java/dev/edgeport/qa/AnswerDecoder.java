package dev.edgeport.qa;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Start/end logits of every window -> the best answers, as transformers' question-answering pipeline
 * post-processes them ({@code select_starts_ends}, {@code decode_spans}, {@code get_indices} with
 * {@code align_to_words=True}):
 * <ol>
 *   <li>per window, logits outside the context (the [CLS] position excepted) become -10000, then a
 *       softmax over the whole window for starts and for ends;</li>
 *   <li>the null score is min over windows of p_start[CLS] * p_end[CLS]; then [CLS] gets probability 0;</li>
 *   <li>span (i, j) scores p_start[i] * p_end[j] for i <= j <= i + maxAnswerLen - 1, both in the context;
 *       the window's {@code 2 * topK + 10} best are kept (alignment to words may merge some);</li>
 *   <li>a span covers whole words: from the first character of the start token's word to the last of the
 *       end token's word (word extents as seen inside that window);</li>
 *   <li>spans with the same text, ignoring case, add their scores (the first one keeps its offsets);</li>
 *   <li>answers of all windows (plus the null answer when {@code handleImpossibleAnswer}) are sorted by
 *       score, stably, and cut to {@code topK}.</li>
 * </ol>
 * Computed in double precision, as edgeport's Python pipeline (edgeport/runtime/pipelines/qa.py). One
 * difference, on purpose: where a window has fewer valid spans than it keeps, transformers (and the
 * Python pipeline, which copies it) fill the list with zero-score spans picked in numpy's argpartition
 * order, some ill-formed (end before start); this keeps spans of positive score only.
 */
public final class AnswerDecoder {
    public final int topK;
    public final int maxAnswerLen;
    public final boolean handleImpossibleAnswer;

    /**
     * @param topK answers returned (transformers default 1)
     * @param maxAnswerLen longest answer in tokens (transformers default 15)
     * @param handleImpossibleAnswer also offer the empty answer, scored by the [CLS] position
     */
    public AnswerDecoder(int topK, int maxAnswerLen, boolean handleImpossibleAnswer) {
        if (topK < 1 || maxAnswerLen < 1) throw new IllegalArgumentException("topK and maxAnswerLen must be >= 1");
        this.topK = topK;
        this.maxAnswerLen = maxAnswerLen;
        this.handleImpossibleAnswer = handleImpossibleAnswer;
    }

    /**
     * @param context the passage the features were made from
     * @param features the windows, as {@link FeatureConverter#convert} made them
     * @param startLogits per window, one float per position (length = window length)
     * @param endLogits likewise
     * @return at most {@code topK} answers, best first
     */
    public List<Answer> decode(String context, List<Feature> features, List<float[]> startLogits,
                               List<float[]> endLogits) {
        int[] cps = context.codePoints().toArray();
        List<Answer> all = new ArrayList<>();
        double minNull = 1e6;
        for (int w = 0; w < features.size(); w++) {
            Feature f = features.get(w);
            double[] ps = probabilities(f, startLogits.get(w));
            double[] pe = probabilities(f, endLogits.get(w));
            minNull = Math.min(minNull, ps[0] * pe[0]);
            ps[0] = 0;
            pe[0] = 0;
            for (int[] span : bestSpans(f, ps, pe, 2 * topK + 10)) {
                int a = wordStart(f, span[0]);
                int b = wordEnd(f, span[1]);
                merge(all, new String(cps, a, b - a), a, b, ps[span[0]] * pe[span[1]]);
            }
        }
        if (handleImpossibleAnswer) all.add(new Answer("", 0, 0, minNull));
        all.sort((x, y) -> Double.compare(y.score, x.score));  // List.sort is stable
        return new ArrayList<>(all.subList(0, Math.min(topK, all.size())));
    }

    /** Adds the score to the answer with the same text ignoring case, else appends a new answer. */
    private static void merge(List<Answer> answers, String text, int a, int b, double score) {
        String key = text.toLowerCase(Locale.ROOT);
        for (int k = 0; k < answers.size(); k++) {
            Answer old = answers.get(k);
            if (old.text.toLowerCase(Locale.ROOT).equals(key)) {
                answers.set(k, new Answer(old.text, old.start, old.end, old.score + score));
                return;
            }
        }
        answers.add(new Answer(text, a, b, score));
    }

    /** Softmax over the window with non-context positions other than [CLS] (position 0) set to -10000. */
    static double[] probabilities(Feature f, float[] logits) {
        int n = f.length();
        double[] p = new double[n];
        double max = Double.NEGATIVE_INFINITY;
        for (int k = 0; k < n; k++) {
            boolean keep = (k == 0 || f.isContext(k)) && f.attentionMask[k] == 1;
            p[k] = keep ? logits[k] : -10000.0;
            max = Math.max(max, p[k]);
        }
        double sum = 0;
        for (int k = 0; k < n; k++) {
            p[k] = Math.exp(p[k] - max);
            sum += p[k];
        }
        for (int k = 0; k < n; k++) p[k] /= sum;
        return p;
    }

    /** The window's best {@code keep} (start, end) pairs by score, both positions in the context, best first. */
    List<int[]> bestSpans(Feature f, double[] ps, double[] pe, int keep) {
        List<int[]> best = new ArrayList<>();  // kept sorted, at most topK
        List<Double> scores = new ArrayList<>();
        int n = f.length();
        int topK = keep;
        for (int i = 0; i < n; i++) {
            if (!f.isContext(i)) continue;
            for (int j = i; j < Math.min(n, i + maxAnswerLen); j++) {
                if (!f.isContext(j)) continue;
                double s = ps[i] * pe[j];
                if (!(s > 0)) continue;
                if (best.size() == topK && s <= scores.get(topK - 1)) continue;
                int at = best.size();
                while (at > 0 && scores.get(at - 1) < s) at--;
                best.add(at, new int[] {i, j});
                scores.add(at, s);
                if (best.size() > topK) {
                    best.remove(topK);
                    scores.remove(topK);
                }
            }
        }
        return best;
    }

    /** First character of the word holding token {@code pos}, over that word's tokens in this window. */
    static int wordStart(Feature f, int pos) {
        int k = pos;
        while (k - 1 >= 0 && f.wordIds[k - 1] == f.wordIds[pos]) k--;
        return f.charStart[k];
    }

    /** One past the last character of the word holding token {@code pos}, within this window. */
    static int wordEnd(Feature f, int pos) {
        int k = pos;
        while (k + 1 < f.length() && f.wordIds[k + 1] == f.wordIds[pos]) k++;
        return f.charEnd[k];
    }
}
