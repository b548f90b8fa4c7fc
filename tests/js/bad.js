export default class Broken {
  onMessage(message) {
    const x = ;
  }
}
