package dev.edgeport.qa.app;

import android.content.res.AssetFileDescriptor;
import android.content.res.AssetManager;
import dev.edgeport.qa.ExportManifest;
import dev.edgeport.qa.QaInterpreter;
import java.io.FileInputStream;
import java.io.IOException;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.util.HashMap;
import java.util.Map;
import org.tensorflow.lite.Interpreter;

/**
 * The core's interpreter over LiteRT's Interpreter API: the export's .tflite memory-mapped from the APK's
 * assets, XNNPACK on the CPU (LiteRT's default), run through the signature edgeport.json names
 * ({@code signature_key}) with the input and output names it lists. Not thread-safe: one instance per thread (as LiteRT's Interpreter).
 */
final class LiteRtQaInterpreter implements QaInterpreter, AutoCloseable {
    private final Interpreter interpreter;
    private final ExportManifest manifest;
    private final int seqLen;

    /**
     * @param assetPath e.g. "models/int8/model.int8-dyn-pc.tflite" (stored uncompressed: see app/build.gradle)
     * @throws IOException when the asset cannot be opened
     */
    LiteRtQaInterpreter(AssetManager assets, String assetPath, ExportManifest manifest, int threads) throws IOException {
        Interpreter.Options options = new Interpreter.Options().setNumThreads(threads);
        this.interpreter = new Interpreter(map(assets, assetPath), options);
        this.manifest = manifest;
        this.seqLen = manifest.seqLen();
    }

    private static MappedByteBuffer map(AssetManager assets, String path) throws IOException {
        try (AssetFileDescriptor fd = assets.openFd(path);
             FileInputStream in = new FileInputStream(fd.getFileDescriptor())) {
            return in.getChannel().map(FileChannel.MapMode.READ_ONLY, fd.getStartOffset(), fd.getDeclaredLength());
        }
    }

    @Override
    public Map<String, float[]> run(Map<String, int[]> inputs) {
        Map<String, Object> in = new HashMap<>();
        for (ExportManifest.Tensor t : manifest.inputs) in.put(t.name, new int[][] {inputs.get(t.name)});  // [1, S]
        Map<String, Object> out = new HashMap<>();
        for (ExportManifest.Tensor t : manifest.outputs) out.put(t.name, new float[1][seqLen]);
        if (manifest.signatureKey != null) interpreter.runSignature(in, out, manifest.signatureKey);
        else interpreter.runSignature(in, out);  // older manifests: the export's only signature
        Map<String, float[]> result = new HashMap<>();
        for (Map.Entry<String, Object> e : out.entrySet()) result.put(e.getKey(), ((float[][]) e.getValue())[0]);
        return result;
    }

    @Override
    public void close() {
        interpreter.close();
    }
}
