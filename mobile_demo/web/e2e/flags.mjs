// Chromium flags for headless runs on a machine without outside network (no background connections).
export const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
  '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'];
