// Passages offered on the page (written for this demo).
export const SAMPLES = [
  {
    title: 'The lighthouse',
    question: 'Who built the lighthouse?',
    passage: 'The lighthouse on Skarv Point was built in 1874 by the engineer Marta Lindqvist. Its lamp, first ' +
      'fired with paraffin, was electrified in 1931 and can be seen 18 nautical miles out to sea. The last ' +
      'keeper, Jonas Berg, left the island in 1989, when the light became automatic.',
  },
  {
    title: 'Photosynthesis',
    question: 'What do leaves release?',
    passage: 'Photosynthesis converts light energy into chemical energy. Chlorophyll absorbs mostly blue and red ' +
      'light, which is why leaves look green. The reactions take place in chloroplasts, and oxygen is released ' +
      'as a by-product when water molecules are split.',
  },
  {
    title: 'Café de Flore',
    question: 'Where is the café?',
    passage: 'Le Café de Flore, ouvert vers 1887, se trouve à Paris, au coin du boulevard Saint-Germain et de la ' +
      'rue Saint-Benoît. Sartre et Beauvoir y écrivaient pendant l’hiver 1943.',
  },
];
