package dev.edgeport.qa.app;

import android.app.Activity;
import android.graphics.Color;
import android.os.Bundle;
import android.text.SpannableString;
import android.text.Spanned;
import android.text.style.BackgroundColorSpan;
import android.view.View;
import android.widget.AdapterView;
import android.widget.ArrayAdapter;
import android.widget.Button;
import android.widget.EditText;
import android.widget.Spinner;
import android.widget.TextView;
import dev.edgeport.qa.Answer;
import dev.edgeport.qa.AnswerDecoder;
import dev.edgeport.qa.ExportManifest;
import dev.edgeport.qa.QaEngine;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * Pick or paste a passage, ask, see the top answers highlighted with their scores and the inference time.
 * Models come from assets/models/NAME/ (int8 first, the default; fp32 if installed), put there by
 * mobile_demo/scripts/install_export.py. All model work runs on one background thread.
 */
public class MainActivity extends Activity {
    private static final String[] MODELS = {"int8", "fp32"};
    private static final String[][] SAMPLES = {
        {"The lighthouse", "Who built the lighthouse?",
            "The lighthouse on Skarv Point was built in 1874 by the engineer Marta Lindqvist. Its lamp, first fired "
                + "with paraffin, was electrified in 1931 and can be seen 18 nautical miles out to sea. The last keeper, "
                + "Jonas Berg, left the island in 1989, when the light became automatic."},
        {"Photosynthesis", "What do leaves release?",
            "Photosynthesis converts light energy into chemical energy. Chlorophyll absorbs mostly blue and red light, "
                + "which is why leaves look green. The reactions take place in chloroplasts, and oxygen is released as a "
                + "by-product when water molecules are split."},
    };

    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private QaEngine engine;
    private LiteRtQaInterpreter interpreter;
    private EditText passage;
    private EditText question;
    private Button ask;
    private TextView status;
    private TextView answers;
    private TextView highlighted;
    private TextView modelLine;

    @Override
    protected void onCreate(Bundle state) {
        super.onCreate(state);
        setContentView(R.layout.activity_main);
        passage = findViewById(R.id.passage);
        question = findViewById(R.id.question);
        ask = findViewById(R.id.ask);
        status = findViewById(R.id.status);
        answers = findViewById(R.id.answers);
        highlighted = findViewById(R.id.highlighted);
        modelLine = findViewById(R.id.model_line);
        setUpSamples();
        setUpModels();
        ask.setOnClickListener(v -> askQuestion());
    }

    private void setUpSamples() {
        Spinner sample = findViewById(R.id.sample);
        String[] titles = new String[SAMPLES.length];
        for (int k = 0; k < titles.length; k++) titles[k] = SAMPLES[k][0];
        sample.setAdapter(new ArrayAdapter<>(this, android.R.layout.simple_spinner_dropdown_item, titles));
        sample.setOnItemSelectedListener(new Selected(k -> {
            question.setText(SAMPLES[k][1]);
            passage.setText(SAMPLES[k][2]);
        }));
    }

    private void setUpModels() {
        Spinner model = findViewById(R.id.model);
        model.setAdapter(new ArrayAdapter<>(this, android.R.layout.simple_spinner_dropdown_item, MODELS));
        model.setOnItemSelectedListener(new Selected(k -> load(MODELS[k])));
    }

    /** Opens assets/models/NAME on the worker thread; the Ask button waits for it. */
    private void load(String name) {
        ask.setEnabled(false);
        modelLine.setText(R.string.loading);
        worker.execute(() -> {
            try {
                String base = "models/" + name + "/";
                ExportManifest m = ExportManifest.parse(asset(base + "edgeport.json"));
                if (interpreter != null) interpreter.close();
                interpreter = new LiteRtQaInterpreter(getAssets(), base + m.artifact, m, 4);
                engine = new QaEngine(m, asset(base + m.tokenizerFile), interpreter);
                String line = String.format(Locale.ROOT, "%s %s · %.1f MiB · %d tokens%s", m.family, m.precision,
                        m.sizeBytes / 1048576.0, m.seqLen(), m.randomWeights ? " · random weights" : "");
                runOnUiThread(() -> {
                    modelLine.setText(line);
                    ask.setEnabled(true);
                });
            } catch (IOException | RuntimeException e) {
                runOnUiThread(() -> modelLine.setText("Could not load models/" + name + ": " + e.getMessage()));
            }
        });
    }

    private void askQuestion() {
        String q = question.getText().toString();
        String context = passage.getText().toString();
        ask.setEnabled(false);
        worker.execute(() -> {
            try {
                QaEngine.Result r = engine.answer(q, context, new AnswerDecoder(3, 15, false));
                runOnUiThread(() -> show(context, r));
            } catch (RuntimeException e) {
                runOnUiThread(() -> status.setText(e.getMessage()));
            } finally {
                runOnUiThread(() -> ask.setEnabled(true));
            }
        });
    }

    private void show(String context, QaEngine.Result r) {
        status.setText(String.format(Locale.ROOT, "%.0f ms inference · %d window(s)", r.inferenceMs, r.windows));
        StringBuilder list = new StringBuilder();
        SpannableString marked = new SpannableString(context);
        for (int k = 0; k < r.answers.size(); k++) {
            Answer a = r.answers.get(k);
            String text = a.text.isEmpty() ? getString(R.string.no_answer) : a.text;
            list.append(k + 1).append(". ").append(text).append(String.format(Locale.ROOT, "  %.4f\n", a.score));
            if (a.end > a.start) {  // offsets are code points; Spannable wants UTF-16 indices
                int from = context.offsetByCodePoints(0, a.start);
                int to = context.offsetByCodePoints(0, a.end);
                int color = k == 0 ? Color.rgb(255, 224, 130) : Color.rgb(255, 243, 196);
                marked.setSpan(new BackgroundColorSpan(color), from, to, Spanned.SPAN_EXCLUSIVE_EXCLUSIVE);
            }
        }
        answers.setText(list.toString().trim());
        highlighted.setText(marked);
    }

    private String asset(String path) throws IOException {
        try (InputStream in = getAssets().open(path); ByteArrayOutputStream out = new ByteArrayOutputStream()) {
            byte[] buf = new byte[1 << 16];
            for (int n; (n = in.read(buf)) > 0; ) out.write(buf, 0, n);
            return new String(out.toByteArray(), StandardCharsets.UTF_8);
        }
    }

    @Override
    protected void onDestroy() {
        worker.execute(() -> {
            if (interpreter != null) interpreter.close();
        });
        worker.shutdown();
        super.onDestroy();
    }

    /** A spinner listener from a lambda over the selected position. */
    private static final class Selected implements AdapterView.OnItemSelectedListener {
        interface OnPick {
            void pick(int position);
        }

        private final OnPick onPick;

        Selected(OnPick onPick) {
            this.onPick = onPick;
        }

        @Override
        public void onItemSelected(AdapterView<?> parent, View view, int position, long id) {
            onPick.pick(position);
        }

        @Override
        public void onNothingSelected(AdapterView<?> parent) {
        }
    }
}
