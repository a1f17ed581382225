package dev.edgeport.qa;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Question answering over a passage: windows -> interpreter -> answers. Defaults are transformers'
 * pipeline's: doc stride 128 tokens, max answer 15 tokens; question cut at 64 tokens.
 */
public final class QaEngine {
    /** Answers plus how long the interpreter took, in milliseconds, summed over windows. */
    public static final class Result {
        public final List<Answer> answers;
        public final int windows;
        public final double inferenceMs;

        Result(List<Answer> answers, int windows, double inferenceMs) {
            this.answers = answers;
            this.windows = windows;
            this.inferenceMs = inferenceMs;
        }
    }

    public static final int DOC_STRIDE = 128;
    public static final int MAX_QUERY_LEN = 64;

    private final ExportManifest manifest;
    private final FeatureConverter converter;
    private final QaInterpreter interpreter;

    /**
     * @param manifest the export's edgeport.json
     * @param tokenizerJson the export's tokenizer.json, as text
     */
    public QaEngine(ExportManifest manifest, String tokenizerJson, QaInterpreter interpreter) {
        this.manifest = manifest;
        @SuppressWarnings("unchecked")
        Map<String, Object> tj = (Map<String, Object>) Json.parse(tokenizerJson);
        int seq = manifest.seqLen();
        this.converter = new FeatureConverter(BertTokenizer.fromTokenizerJson(tj), seq,
                Math.min(seq / 2, DOC_STRIDE), MAX_QUERY_LEN);
        this.interpreter = interpreter;
    }

    public FeatureConverter converter() {
        return converter;
    }

    /**
     * @throws IllegalArgumentException on an empty question or passage
     */
    public Result answer(String question, String context, AnswerDecoder decoder) {
        if (question.trim().isEmpty() || context.trim().isEmpty())
            throw new IllegalArgumentException("give a question and a passage");
        List<Feature> features = converter.convert(question, context);
        List<float[]> starts = new ArrayList<>();
        List<float[]> ends = new ArrayList<>();
        long t0 = System.nanoTime();
        for (Feature f : features) {
            Map<String, int[]> in = new HashMap<>();
            in.put("input_ids", f.inputIds);
            in.put("attention_mask", f.attentionMask);
            if (manifest.hasInput("token_type_ids")) in.put("token_type_ids", f.tokenTypeIds);
            Map<String, float[]> out = interpreter.run(in);
            starts.add(out.get("start_logits"));
            ends.add(out.get("end_logits"));
        }
        double ms = (System.nanoTime() - t0) / 1e6;
        return new Result(decoder.decode(context, features, starts, ends), features.size(), ms);
    }
}
