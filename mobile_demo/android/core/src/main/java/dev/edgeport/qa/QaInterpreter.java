package dev.edgeport.qa;

import java.util.Map;

/**
 * What the core needs from an inference engine: run the export's signature once on one window.
 * The Android app implements it over LiteRT's Interpreter ({@code runSignature}); tests implement it over
 * stored logits.
 */
public interface QaInterpreter {
    /**
     * @param inputs input name (from edgeport.json: input_ids, attention_mask, token_type_ids) -> int32
     *     values of shape [1, S], flattened
     * @return output name (start_logits, end_logits) -> float32 values of shape [1, S], flattened
     */
    Map<String, float[]> run(Map<String, int[]> inputs);
}
